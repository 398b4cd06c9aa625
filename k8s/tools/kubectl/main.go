// kubectl, built from the Go module proxy at the version go.mod pins (k8s/tools/kube.py builds
// it into the cache when no kubectl with kustomize v5 is on the machine).
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand())
}
