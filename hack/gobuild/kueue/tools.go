//go:build tools

// Package tools pins the upstream Kueue manager (sigs.k8s.io/kueue/cmd/kueue) built by
// `hack/build-tools.sh kueue` for the Kueue e2e tests and bench/admission_latency.py.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
