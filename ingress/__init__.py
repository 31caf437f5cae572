"""Ingress controller driving HAProxy."""
