"""Static checks of every launch/*.launch.py (launch and launch_ros are not installed here).

Each file must parse, start only executables that setup.py installs as console_scripts, refer to
config files that exist, and set only parameters that its node declares; the YAML config files it
loads must only hold declared parameters too (a typo there is otherwise silently ignored).
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
BUILTIN_PARAMETERS = {"use_sim_time"}  # declared by rclpy for every node


def console_scripts() -> dict[str, str]:
    """console_scripts name -> module, from setup.py's entry_points."""
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r"\s*([\w-]+)\s*=\s*([\w.]+):(\w+)\s*", node.value)
            if m:
                scripts[m.group(1)] = m.group(2)
    return scripts


def _name_pattern(arg: ast.expr) -> str | None:
    """Regex of a parameter name given as a literal or an f-string; None when not static."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return re.escape(arg.value)
    if isinstance(arg, ast.JoinedStr):
        return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else r"[^.]+" for v in arg.values)
    return None


def declared_parameters(module: str) -> list[str]:
    """Regexes of the parameter names a node module (and the lapo modules it imports) declares.

    Names come from the first string argument of any call whose function name contains "declare"
    and of the `Param(...)` entries of parameter tables (lapo_learning.recording, shared by the
    recorder, the policy node and the rosbag2 converter); a module that declares from a dataclass
    (non-literal name) contributes its dataclass fields.
    """
    patterns: list[str] = []
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = REPO / (mod.replace(".", "/") + ".py")
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        dynamic = False
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("lapo_ros", "lapo_learning")):
                todo.append(node.module)
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name != "Param" and ("declare" not in name or name.endswith("_parameters")):
                    continue
                args = [a for a in node.args if not (isinstance(a, ast.Name) and a.id in ("node", "self"))]
                if args:
                    pattern = _name_pattern(args[0])
                    if pattern is None:
                        dynamic = True
                    else:
                        patterns.append(pattern)
        if dynamic:
            for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
                if any("dataclass" in ast.unparse(d) for d in cls.decorator_list):
                    patterns += [re.escape(s.target.id) for s in cls.body
                                 if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    return patterns


def is_declared(name: str, patterns: list[str]) -> bool:
    return name in BUILTIN_PARAMETERS or any(re.fullmatch(p, name) for p in patterns)


def flatten(params: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in params.items():
        if isinstance(value, dict):
            names += flatten(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def launch_nodes(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_there_are_launch_files() -> None:
    assert (REPO / "launch" / "record.launch.py") in LAUNCH_FILES


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    scripts = console_scripts()
    nodes = launch_nodes(path)
    assert nodes, f"{path.name} starts no Node"
    yaml_names = {n.value for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith(".yaml")}
    for name in yaml_names:
        assert (REPO / "config" / Path(name).name).is_file(), f"{path.name}: config {name} does not exist"
    for call in nodes:
        exe = keyword(call, "executable")
        assert isinstance(exe, ast.Constant), f"{path.name}: executable must be a literal"
        assert exe.value in scripts, f"{path.name}: executable {exe.value!r} is not a console_script {sorted(scripts)}"
        module = scripts[exe.value]
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"{module} does not exist"
        patterns = declared_parameters(module)
        assert patterns, f"{module} declares no parameters"
        params = keyword(call, "parameters")
        for entry in (params.elts if isinstance(params, ast.List) else []):
            if isinstance(entry, ast.Dict):
                for key in entry.keys:
                    assert isinstance(key, ast.Constant)
                    assert is_declared(key.value, patterns), \
                        f"{path.name}: parameter {key.value!r} is not declared by {module}"
        for name in yaml_names:
            config = yaml.safe_load((REPO / "config" / Path(name).name).read_text())
            for node_name, section in config.items():
                for param in flatten(section.get("ros__parameters", {})):
                    assert is_declared(param, patterns), \
                        f"config/{Path(name).name} [{node_name}]: {param!r} is not declared by {module}"


def test_the_checker_catches_mistakes() -> None:
    patterns = declared_parameters("lapo_ros.recorder")
    assert is_declared("cameras.left_image.topic", patterns) and is_declared("record_rate", patterns)
    assert is_declared("joint_names", patterns) and is_declared("use_sim_time", patterns)
    assert not is_declared("record_rat", patterns) and not is_declared("cameras.left_image.topics", patterns)
    assert console_scripts()["recorder"] == "lapo_ros.recorder"
