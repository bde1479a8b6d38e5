"""Deployment tooling: the container image (build, base image, engine set-up) and the Kubernetes
manifests under deploy/k8s (rendered by ``kubectl kustomize`` for the tests)."""
