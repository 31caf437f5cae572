"""Kubernetes plumbing shared by every component (controller, speaker, ingress).

Everything here works with plain JSON dicts as the API server sends them; kubernetes-client
model classes are never used (they validate and drop fields of CRDs and newer API versions).
"""
