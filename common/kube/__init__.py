"""Kubernetes plumbing shared by every component (controller, speaker, ingress): the only
Kubernetes I/O in the product.

Everything here works with plain JSON dicts as the API server sends them; kubernetes-client
model classes are never used (they validate and drop fields of CRDs and newer API versions).

    resources  Resource(group, version, plural, kind, namespaced, status_subresource) + constants
    client     KubeClient: get/list/watch/create/replace/patch/delete; timeouts; common.errors
    informer   Informer: list, watch from the list's resourceVersion, relist on 410, backoff
    workqueue  WorkQueue + Outcome + process_one/run_workers (the loop owns retries)
    status     status_patch/merge_diff/set_condition (pure, from common.api.statusdiff) and
               write_status (PATCH /status only when something changed)
    events     EventRecorder: core/v1 Events with de-duplication; never raises
    leader     LeaderElector on a coordination.k8s.io/v1 Lease
    serve      start_http_server: /healthz, /readyz, /metrics
    backoff    full-jitter exponential backoff (Backoff, KeyedBackoff)
    clock      Clock protocol, RealClock, RFC 3339 formatting (the fake clock is lab.fakeclock)
    refusal    400/403/422 answers: reported once (Event, metric), not retried until a change
    loop       ReconcileLoop: the one reconcile loop of every component (a WorkQueue with
               debounce, maximum delay, per-key back-off, give-up with a reason)
"""
