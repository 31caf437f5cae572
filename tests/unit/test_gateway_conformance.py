"""The Gateway API conformance runner's pure parts (lab.gateway_conformance): the chart
values it installs with, the suite's command line, and how `go test -v` output is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import gateway_conformance as gc

GO_TEST = """\
=== RUN   TestConformance
    conformance.go:60: Running conformance tests with:
=== RUN   TestConformance/HTTPRouteSimpleSameNamespace
=== RUN   TestConformance/HTTPRouteSimpleSameNamespace/Simple_HTTP_request
    --- PASS: TestConformance/HTTPRouteSimpleSameNamespace/Simple_HTTP_request (0.05s)
    --- PASS: TestConformance/HTTPRouteSimpleSameNamespace (0.61s)
    --- FAIL: TestConformance/HTTPRouteWeight (60.02s)
    --- SKIP: TestConformance/MeshBasic (0.00s)
--- FAIL: TestConformance (75.30s)
FAIL
"""


def test_values_turn_the_gateway_api_on_and_take_overrides() -> None:
    v = gc.helm_values(["gateway.gatewayClass.name=edge", "ingress.replicas=1",
                        "speaker.extraArgs=[]"])
    assert v["gateway"] == {"enabled": True, "installCRDs": True,
                            "gatewayClass": {"name": "edge"}}
    assert v["ingress"] == {"replicas": 1}
    assert v["speaker"]["extraArgs"] == []
    assert gc.helm_values([])["speaker"]["extraArgs"]  # LabCluster's own values kept
    with pytest.raises(ValueError):
        gc.helm_values(["gateway.enabled"])


def test_suite_command_line() -> None:
    argv = gc.suite_argv(Path("/bin/suite.test"), gc.SuiteOptions(
        report=Path("/r.yaml"), run_test="HTTPRouteWeight", supported_features="Gateway"))
    assert argv[:6] == ["/bin/suite.test", "-test.v", "-test.run", "^TestConformance$",
                        "-test.timeout", gc.SUITE_TIMEOUT]
    for flag in ("-gateway-class=portico",
                 "-conformance-profiles=GATEWAY-HTTP,GATEWAY-TLS,GATEWAY-GRPC,GATEWAY-TCP",
                 "-cleanup-base-resources=true", "-report-output=/r.yaml",
                 "-run-test=HTTPRouteWeight", "-supported-features=Gateway",
                 "-organization=portico", "-version=0.1.0"):
        assert flag in argv
    assert not any(a.startswith(("-skip-tests", "-all-features", "-debug")) for a in argv)


def test_results_are_the_suites_tests_not_their_steps() -> None:
    results = gc.parse_results(GO_TEST)
    assert results == {"HTTPRouteSimpleSameNamespace": ("PASS", 0.61),
                       "HTTPRouteWeight": ("FAIL", 60.02), "MeshBasic": ("SKIP", 0.0),
                       "": ("FAIL", 75.3)}
    lines = gc.summary(results)
    assert lines[0].split() == ["FAIL", "HTTPRouteWeight", "(60.0", "s)"]
    assert lines[-1] == "1 passed, 1 failed, 1 skipped"
    assert not any("MeshBasic" in line for line in gc.summary(results, list_skipped=False))


def test_backend_objects_leave_the_gateways_out() -> None:
    docs = [{"kind": k} for k in ("Namespace", "Gateway", "Service", "Deployment",
                                  "ConfigMap", "Secret")]
    assert [d["kind"] for d in gc.backend_objects(docs)] == [
        "Namespace", "Service", "Deployment", "ConfigMap"]


def test_setup_failure_names_the_first_error() -> None:
    text = ("    suite.go:380: Test Setup: Ensuring GatewayClass has been accepted\n"
            "        Error:      cannot infer supported features from GWC: x\n"
            "    helpers.go:99: error waiting for gateway-conformance-infra namespaces to be "
            "ready\n")
    assert gc.setup_failure(text) == "Error:      cannot infer supported features from GWC: x"
