"""Pure planning: values in, values out; no I/O, no clock, no environment, no Kubernetes client."""
