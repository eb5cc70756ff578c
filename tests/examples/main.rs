//! The shipped examples: Dockerfile, Kubernetes manifests and the deploy/ Kustomize package. One test binary; each file is a
//! module.

#[path = "../kit/mod.rs"]
mod kit;

mod deploy_overlays;
mod examples_dockerfile;
mod examples_manifests;
mod examples_mi_sources;
