//go:build tools

// Package tools pins the upstream JobSet controller (the manager's main package is the module
// root, sigs.k8s.io/jobset) built by `hack/build-tools.sh jobset` for bench/operator_scale.py.
package tools

import (
	_ "sigs.k8s.io/jobset"
)
