"""Portico load-balancer controller and the Kubernetes plumbing shared by all components."""
