// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux
// and kpt use for health) computes for Kubernetes objects, so tests can check that a
// ModelDeployment's status reads as Current, InProgress or Failed to those tools.
//
// Input on stdin: JSON objects one after another (what `kubectl get -o json` prints, or a stream);
// a List's items are read one by one. Output on stdout: one JSON line per object,
// {"kind", "namespace", "name", "status", "message"}. A decode or compute error exits 1.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func compute(obj map[string]interface{}, out *json.Encoder) error {
	u := &unstructured.Unstructured{Object: obj}
	if strings.HasSuffix(u.GetKind(), "List") {
		items, _, err := unstructured.NestedSlice(obj, "items")
		if err != nil {
			return err
		}
		for _, item := range items {
			m, ok := item.(map[string]interface{})
			if !ok {
				return fmt.Errorf("a %s item is not an object", u.GetKind())
			}
			if err := compute(m, out); err != nil {
				return err
			}
		}
		return nil
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out.Encode(result{u.GetKind(), u.GetNamespace(), u.GetName(), res.Status.String(), res.Message})
}

func main() {
	in := json.NewDecoder(os.Stdin)
	// Numbers as int64 where they are integers, as the API machinery's own decoder does: kstatus
	// reads metadata.generation and status.observedGeneration with NestedInt64.
	in.UseNumber()
	out := json.NewEncoder(os.Stdout)
	for {
		var raw map[string]interface{}
		if err := in.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
			os.Exit(1)
		}
		obj, err := normalize(raw)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
		if err := compute(obj.(map[string]interface{}), out); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
	}
}

// normalize turns json.Number into int64 (or float64 when fractional), the types unstructured
// helpers expect.
func normalize(v interface{}) (interface{}, error) {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, item := range t {
			n, err := normalize(item)
			if err != nil {
				return nil, err
			}
			t[k] = n
		}
		return t, nil
	case []interface{}:
		for i, item := range t {
			n, err := normalize(item)
			if err != nil {
				return nil, err
			}
			t[i] = n
		}
		return t, nil
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i, nil
		}
		return t.Float64()
	default:
		return v, nil
	}
}
