//go:build tools

// Package tools pins the Kubernetes commands built by tests/cluster/build.sh.
// The blank imports keep `go mod tidy` from dropping them; the file is never
// compiled (build tag `tools`). Regenerate go.mod with ../regen-k8s.sh.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
