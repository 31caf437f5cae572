"""Gateway API (gateway.networking.k8s.io/v1) on the HAProxy tier.

``ingress.gateway.model`` turns GatewayClasses, Gateways, routes and ReferenceGrants into
listeners, routing rules and backends for the data plane plus the status every object must
show (pure); ``ingress.gateway.render`` writes the frontends; the ingress controller shell
watches the objects, writes the statuses and the Gateways' LoadBalancer Services.
"""
