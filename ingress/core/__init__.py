"""Pure logic of the ingress tier (routing model, config rendering). No I/O imports."""
