// Package deploy holds no code: it is the deployment files (systemd units, container
// images, Kubernetes manifests, Grafana dashboard, Prometheus alerts) and the tests that
// check them with the tools an operator would use (systemd-analyze, promtool, strict
// decoding into the Kubernetes API types) and by running the real binary as the files
// say to. Its test-only dependencies (k8s.io/api) never reach the daemon's binary.
package deploy
