"""The label-review and reader-study web app (Starlette + Jinja, talks to the gateway over gRPC)."""
