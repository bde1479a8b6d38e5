"""Deployment tooling: the container image (build, base image, engine set-up) and the Kubernetes
manifests under deploy/k8s (rendered by deploy.kustomize for the tests)."""
