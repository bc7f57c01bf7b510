"""deploy/k8s against the Kubernetes API's schema, offline: the ``kubernetes`` Python client's
generated models (one per API type, with every field's JSON name and type).

Each object is walked field by field against its model: an unknown field (a typo, a field at
the wrong level), a value of the wrong type, or an unknown apiVersion/kind is an error naming
its path. The objects are then deserialized by the client's ``ApiClient``, which checks
required fields and enums. The DaskCluster (a custom resource of the Dask Kubernetes Operator)
is checked against that CRD's fields, and its pod and service specs against the API's models.
The Prefect work pool's Job template is checked after Prefect renders it with its defaults.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import re
import shlex

import pytest

from tests.test_deploy import K8S, job_template, manifests, the_deployment

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client (pip install -e '.[dev]') holds the API's models")
from kubernetes.client import ApiClient, models  # noqa: E402

#: apiVersion -> the client's model prefix (its group version)
GROUP_VERSIONS = {"v1": "V1", "apps/v1": "V1", "batch/v1": "V1", "rbac.authorization.k8s.io/v1": "V1", "networking.k8s.io/v1": "V1",
                  "policy/v1": "V1", "autoscaling/v2": "V2"}
#: The Dask Kubernetes Operator's DaskCluster (kubernetes.dask.org/v1): its CRD's fields,
#: each a model of the API or a nested dict of this form.
DASKCLUSTER = {
    "apiVersion": "str", "kind": "str", "metadata": "V1ObjectMeta",
    "spec": {
        "worker": {"replicas": "int", "spec": "V1PodSpec"},
        "scheduler": {"spec": "V1PodSpec", "service": "V1ServiceSpec"},
        "idleTimeout": "int",
    },
}
# the client's type strings: ``list[X]`` / ``dict(str, X)`` up to v31, ``List[X]`` / ``Dict[str, X]`` since
_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(\w+, (.+)\)|Dict\[\w+, (.+)\])$")
#: quantities (requests, limits) are int-or-string in the API; the client types them as str
_QUANTITY_PARENTS = ("limits", "requests", "capacity", "hard")


def _unknown(key: str, known) -> str:
    near = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown field {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


def check_value(value, type_name: str, path: str) -> list[str]:
    """Problems of ``value`` against a client type string (``V1PodSpec``, ``list[...]``, ...)."""
    if value is None:
        return []
    if isinstance(type_name, dict):  # a custom resource's nested fields
        return check_fields(value, type_name, path)
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in check_value(v, m.group(1), f"{path}[{i}]")]
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        return [p for k, v in value.items() for p in check_value(v, m.group(1) or m.group(2), f"{path}.{k}")]
    if type_name == "str":
        quantity = path.rsplit(".", 2)[-2] in _QUANTITY_PARENTS if path.count(".") >= 2 else False
        ok = isinstance(value, str) or (quantity and isinstance(value, (int, float)) and not isinstance(value, bool))
        return [] if ok else [f"{path}: expected a string, got {type(value).__name__} {value!r}"]
    if type_name == "int":
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer, got {value!r}"]
    if type_name == "float":
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: expected a number, got {value!r}"]
    if type_name == "bool":
        return [] if isinstance(value, bool) else [f"{path}: expected true/false, got {value!r}"]
    if type_name in ("object", "datetime", "date", "bytes"):
        return []
    model = getattr(models, type_name, None)
    if model is None:
        return [f"{path}: no model {type_name} in the kubernetes client"]
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping, got {type(value).__name__}"]
    fields = {model.attribute_map[a]: t for a, t in model.openapi_types.items()}
    return check_fields(value, fields, path)


def check_fields(value, fields: dict, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {type(value).__name__}"]
    problems = []
    for k, v in value.items():
        if k not in fields:
            problems.append(f"{path}: {_unknown(k, fields)}")
        else:
            problems += check_value(v, fields[k], f"{path}.{k}")
    return problems


class _Response:
    def __init__(self, obj) -> None:
        self.data = json.dumps(obj)


def _deserialize(obj: dict, model_name: str):
    """``ApiClient.deserialize``: of a response object up to client v36, of its text and
    content type since v37."""
    client = ApiClient()
    if "content_type" in inspect.signature(client.deserialize).parameters:
        return client.deserialize(json.dumps(obj), model_name, "application/json")
    return client.deserialize(_Response(obj), model_name)


def check_object(obj: dict, where: str) -> list[str]:
    """Every problem of one manifest object; empty when the API would accept its shape."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    where = f"{where}: {kind}/{(obj.get('metadata') or {}).get('name', '?')}"
    if (api_version, kind) == ("kubernetes.dask.org/v1", "DaskCluster"):
        return check_fields(obj, DASKCLUSTER, where)
    prefix = GROUP_VERSIONS.get(api_version)
    model = getattr(models, f"{prefix}{kind}", None) if prefix else None
    if model is None:
        return [f"{where}: unknown apiVersion/kind {api_version}/{kind}"]
    problems = check_value(obj, model.__name__, where)
    if not problems:
        try:  # required fields and enums, as the client checks them
            _deserialize(obj, model.__name__)
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
    return problems


def rendered_job() -> dict:
    """The flow-run Job as Prefect renders the work pool's template for the deployment."""
    from prefect.utilities.templating import apply_values

    template = job_template()
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values = {**defaults, **the_deployment()["work_pool"]["job_variables"], "command": "prefect flow-run execute", "name": "run",
              "labels": {"app": "audioprep"}, "env": {}}
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    # then, as Prefect's Kubernetes worker does before it creates the Job: the command string
    # becomes the container's args, the env mapping a list of name/value entries
    [c] = job["spec"]["template"]["spec"]["containers"]
    c["args"] = shlex.split(c["args"]) if isinstance(c["args"], str) else c["args"]
    c["env"] = [{"name": k, "value": str(v)} for k, v in (c["env"] or {}).items()] if isinstance(c["env"], dict) else c["env"]
    return job


def all_objects() -> list[tuple[str, dict]]:
    objs = [(name, d) for name, docs in manifests().items() if name != "kustomization.yaml" for d in docs]
    return [*objs, ("base-job-template.json", rendered_job())]


def test_every_manifest_matches_the_kubernetes_api_schema():
    objs = all_objects()
    kinds = {d["kind"] for _, d in objs}
    assert {"Deployment", "Service", "ConfigMap", "DaskCluster", "Job", "Role", "RoleBinding", "Namespace"} <= kinds, kinds
    problems = [p for name, d in objs for p in check_object(d, name)]
    assert problems == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # a typo in a container field
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolice", "IfNotPresent"), "unknown field 'imagePullPolice'"),
        # a field one level too deep
        (lambda d: d["spec"]["template"]["spec"].__setitem__("replicas", 2), "unknown field 'replicas'"),
        # a wrong type
        (lambda d: d["spec"].__setitem__("replicas", "two"), "expected an integer"),
        # a required field missing (the client's own check; its words up to v36, then pydantic's since v37)
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
         ("`name`, must not be `None`", "validation error for V1Container\nname\n")),
    ],
    ids=["typo", "wrong-level", "wrong-type", "missing-required"],
)
def test_a_mutated_deployment_fails(mutate, expected):
    [dep] = [d for d in manifests()["prefect-server.yaml"] if d["kind"] == "Deployment"]
    assert check_object(dep, "prefect-server.yaml") == []
    bad = copy.deepcopy(dep)
    mutate(bad)
    problems = check_object(bad, "prefect-server.yaml")
    accepted = expected if isinstance(expected, tuple) else (expected,)
    assert len(problems) == 1 and any(e in problems[0] for e in accepted), problems


def test_a_mutated_daskcluster_and_job_template_fail():
    [cluster] = [d for d in manifests()["daskcluster.yaml"] if d["kind"] == "DaskCluster"]
    bad = copy.deepcopy(cluster)
    bad["spec"]["worker"]["replica"] = bad["spec"]["worker"].pop("replicas")
    assert any("unknown field 'replica' (did you mean 'replicas'?)" in p for p in check_object(bad, "daskcluster.yaml"))
    bad = copy.deepcopy(cluster)
    bad["spec"]["worker"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["nmae"] = "x"
    assert any("unknown field 'nmae'" in p for p in check_object(bad, "daskcluster.yaml"))
    job = rendered_job()
    job["spec"]["template"]["spec"]["completions"] = 1  # belongs to the Job's spec, not its pod's
    assert any("template.spec: unknown field 'completions'" in p for p in check_object(job, "base-job-template.json"))


def test_an_unknown_kind_fails():
    assert check_object({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}, "x.yaml") == [
        "x.yaml: Deploymnet/x: unknown apiVersion/kind apps/v1/Deploymnet"
    ]
    assert K8S.is_dir()
