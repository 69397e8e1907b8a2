"""The repository API: off unless enabled, then token-protected (401 without a token,
403 with a wrong one), bodies it cannot honour refused; model control ``poll`` (an API
unload holds across scans) and ``explicit`` (only the API loads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.repo_builders import place
from support.server_process import ServerProcess

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 784], "data": [0.5] * 784}]}


@pytest.fixture
def onnx_root(example_models: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name in ("first", "other"):
        shutil.copytree(example_models / "mlp_onnx", root / name)
    return root


def index(server: ServerProcess) -> dict[str, dict[str, str]]:
    return {entry["name"]: entry for entry in server.post("/v2/repository/index").json()}


def test_repository_api_is_off_by_default(server: ServerProcess) -> None:
    answer = server.post("/v2/repository/models/mlp/unload", headers=AUTH)
    assert answer.status_code == 403
    assert "repository API is off" in answer.json()["error"]
    assert server.post("/v1/models/mlp:predict", {"instances": [[0.5] * 784]}).status_code == 200
    # the API's refusal comes before its body is read: a garbage body changes nothing
    for body in (b"garbage", {"parameters": {"config": "{}"}}):
        answer = server.post("/v2/repository/models/mlp/load", body, headers=AUTH)
        assert answer.status_code == 403, answer.text


def test_token_required_and_poll_mode_unload_holds_until_load(
    onnx_root: Path, example_models: Path
) -> None:
    server = ServerProcess(
        onnx_root,
        "--management-api",
        "--poll-seconds",
        "0.2",
        env={"KEEPWARM_MANAGEMENT_TOKEN": TOKEN},
    )
    try:
        no_token = server.post("/v2/repository/models/other/unload")
        assert no_token.status_code == 401 and "Bearer" in no_token.json()["error"]
        no_token = server.post("/v2/repository/models/other/load", b"garbage")
        assert no_token.status_code == 401, no_token.text
        wrong = server.post(
            "/v2/repository/models/other/unload", headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403 and "wrong" in wrong.json()["error"]
        assert server.post("/v2/models/other/infer", BODY).status_code == 200

        for body, words in (  # a body keepwarm would ignore is refused, not ignored
            (b"garbage", "malformed JSON"),
            ([1], "must be a JSON object"),
            ({"parameters": 5}, "'parameters' of the load request must be an object"),
            ({"parameters": {"config": "{}"}}, "['config'] are not supported"),
        ):
            refused = server.post("/v2/repository/models/other/load", body, headers=AUTH)
            assert refused.status_code == 400 and words in refused.json()["error"], refused.text
        unload = {"parameters": {"unload_dependents": False}}  # as tritonclient sends it
        assert server.post("/v2/repository/models/other/unload", unload, headers=AUTH).ok
        assert index(server)["other"]["reason"] == "unloaded by API"
        refused = server.post("/v2/models/other/infer", BODY)
        assert refused.status_code == 503 and "unloaded by API" in refused.json()["error"]
        status = server.get("/v1/models/other")  # TF Serving's status says so too
        assert status.status_code == 503 and "unloaded by API" in status.json()["error"]
        # New versions of both models land: the scan loads the first's, not the other's.
        place(onnx_root / "other", 2, example_models / "mlp_onnx" / "1")
        place(onnx_root / "first", 2, example_models / "mlp_onnx" / "1")
        server.wait_for_line("^loaded first version 2")
        assert not [line for line in server.lines if "other version 2" in line]
        assert server.post("/v2/models/other/infer", BODY).status_code == 503

        missing = server.post("/v2/repository/models/nothere/load", headers=AUTH)
        assert missing.status_code == 404
        loaded = server.post("/v2/repository/models/other/load", headers=AUTH)
        assert loaded.status_code == 200, loaded.text
        answer = server.post("/v2/models/other/infer", BODY)
        assert answer.status_code == 200 and answer.json()["model_version"] == "2"
    finally:
        assert server.stop() == 0


def test_explicit_mode_loads_only_through_the_api(onnx_root: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = ServerProcess(
        onnx_root,
        "--management-api",
        "--model-control",
        "explicit",
        "--token-file",
        str(token_file),
    )
    try:
        assert server.get("/v2/health/ready").status_code == 200
        assert index(server)["first"]["state"] == "UNAVAILABLE"
        assert server.post("/v2/models/first/infer", BODY).status_code == 503
        assert server.post("/v2/repository/models/first/load", headers=AUTH).status_code == 200
        assert server.post("/v2/models/first/infer", BODY).status_code == 200
        assert server.post("/v2/models/other/infer", BODY).status_code == 503
    finally:
        assert server.stop() == 0


def test_explicit_mode_without_the_api_is_refused_at_start(onnx_root: Path) -> None:
    with pytest.raises(AssertionError, match="explicit loads only what the repository API"):
        ServerProcess(onnx_root, "--model-control", "explicit")


def test_a_repository_name_not_its_own_is_not_found(grpc_served: ServerProcess) -> None:
    """The server serves one repository, addressed with no name (as Triton's); a named
    index, load or unload was served from it (gRPC ignored the name), or had no route
    (REST). A load or unload checks the token first, as every repository API call."""
    from support.grpc_repo import TOKEN as GRPC_TOKEN

    named = "repository 'elsewhere' is not served here"
    answer = grpc_served.post("/v2/repository/elsewhere/index", {"ready": True})
    assert answer.status_code == 404 and named in answer.json()["error"], answer.text
    good = {"Authorization": f"Bearer {GRPC_TOKEN}"}
    for action in ("load", "unload"):
        path = f"/v2/repository/elsewhere/models/spare/{action}"
        assert grpc_served.post(path).status_code == 401
        answer = grpc_served.post(path, b"garbage", headers=good)  # before the body is read
        assert answer.status_code == 404 and named in answer.json()["error"], answer.text
    assert grpc_served.get("/v2/models/spare/ready").status_code == 200
    assert [row["name"] for row in grpc_served.post("/v2/repository/index").json()]


def test_the_token_files_warning_is_a_json_log_line(tmp_path: Path) -> None:
    # was a bare line (logged before the JSON logs were set up), no level, no time
    import json

    root = tmp_path / "models"
    root.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    server = ServerProcess(root, "--management-api", "--token-file", str(token_file))
    try:
        line = server.wait_for_line("can be read by other users")
    finally:
        assert server.stop() == 0
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "keepwarm.server", line
    assert entry["message"] == (
        f"server.token_file {token_file} can be read by other users (mode 644): chmod 600 it"
    )
