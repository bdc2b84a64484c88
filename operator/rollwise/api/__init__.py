"""The ModelDeployment API: pydantic models that are the single source of the CRD and its docs."""
