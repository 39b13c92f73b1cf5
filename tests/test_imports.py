"""Imports point one way (README "Layout"), read from the source with `ast`, lazy ones included.

  entry points (s3rec_tf.train / sweep / report) -> beam_pipelines, export, s3rec_tf
  beam_pipelines, export -> s3rec_tf's contracts;  s3rec_tf -> keras_models;  keras_models -> none

and a Beam worker does not load TensorFlow: no beam_pipelines module imports TensorFlow or Keras
at module level, directly or through another project module, except those listed with a reason.
"""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("s3rec_tf", "keras_models", "export", "beam_pipelines")
ENTRY_POINTS = {"s3rec_tf.train", "s3rec_tf.sweep", "s3rec_tf.report"}
TENSORFLOW = {"tensorflow", "tf_keras", "keras", "tensorflow_recommenders"}

# beam_pipelines modules that load TensorFlow when imported, and why they must (the test fails
# when an entry is no longer needed). Parsing and the algorithms never do.
BEAM_MODULES_LOADING_TENSORFLOW = {
    "beam_pipelines.examples": "writes the TFRecord shards (tf.train.Example)",
    "beam_pipelines.job": "chains the steps, the example writer included",
}


def _module_files():
    """{dotted module name: path} for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for root, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            for name in files:
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(root, name), REPO)[: -len(".py")]
                parts = relative.split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = os.path.join(root, name)
    return modules


MODULES = _module_files()


def _imports(path):
    """[(imported module, at module level)] of a file: every import statement, nested ones too."""
    tree = ast.parse(open(path).read(), path)
    found = []

    def visit(node, module_level):
        for child in ast.iter_child_nodes(node):
            inside = module_level and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, inside))
                # `from package import module` imports that module too.
                found.extend((f"{child.module}.{alias.name}", inside) for alias in child.names)
            visit(child, inside)

    visit(tree, True)
    return found


def _project_modules(name):
    """The project modules that importing `name` runs: its packages' __init__s and itself."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES]


def _imports_of(module, lazy=True):
    return {name for name, module_level in _imports(MODULES[module]) if lazy or module_level}


def _loads_tensorflow(module, seen=None):
    """Whether importing `module` imports TensorFlow/Keras, directly or through project modules."""
    seen = set() if seen is None else seen
    if module in seen:
        return False
    seen.add(module)
    to_run = set(_project_modules(module)) - {module}
    for name in _imports_of(module, lazy=False):
        if name.split(".")[0] in TENSORFLOW:
            return True
        to_run.update(_project_modules(name))
    return any(_loads_tensorflow(other, seen) for other in sorted(to_run))


def _violations(modules, forbidden):
    return {
        module: sorted(name for name in _imports_of(module) if name.split(".")[0] in forbidden)
        for module in modules
        if any(name.split(".")[0] in forbidden for name in _imports_of(module))
    }


def test_every_package_is_found():
    assert {"s3rec_tf.train", "keras_models.encoder", "export.saved_model"} <= set(MODULES)
    assert "beam_pipelines.preprocess" in MODULES


def test_keras_models_imports_no_project_package():
    modules = [m for m in MODULES if m.split(".")[0] == "keras_models"]
    forbidden = {"s3rec_tf", "export", "beam_pipelines", "benchmarks"}
    assert _violations(modules, forbidden) == {}


def test_only_entry_points_of_s3rec_tf_import_beam_pipelines_or_export():
    modules = [m for m in MODULES if m.split(".")[0] == "s3rec_tf" and m not in ENTRY_POINTS]
    assert _violations(modules, {"beam_pipelines", "export", "benchmarks"}) == {}


def test_export_imports_no_beam_pipelines():
    modules = [m for m in MODULES if m.split(".")[0] == "export"]
    assert _violations(modules, {"beam_pipelines", "benchmarks"}) == {}


def test_beam_pipelines_loads_tensorflow_only_where_listed():
    beam = sorted(m for m in MODULES if m.split(".")[0] == "beam_pipelines")
    loading = {m for m in beam if _loads_tensorflow(m)}
    unlisted = loading - set(BEAM_MODULES_LOADING_TENSORFLOW)
    assert not unlisted, f"beam_pipelines modules that load TensorFlow at import: {unlisted}"
    stale = set(BEAM_MODULES_LOADING_TENSORFLOW) - loading
    assert not stale, f"listed but no longer loading TensorFlow (remove them): {stale}"


def test_the_checker_sees_lazy_and_transitive_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n"
        "def f():\n    from export import saved_model\n"
        "class C:\n    import tensorflow as tf\n"
    )
    found = _imports(str(source))
    assert ("export.saved_model", False) in found and ("os", True) in found
    assert ("tensorflow", True) in found  # a class body runs at import
    assert _loads_tensorflow("beam_pipelines.job")  # through beam_pipelines.examples
    assert _loads_tensorflow("s3rec_tf.data")  # directly


def test_the_data_contract_and_the_package_import_no_tensorflow():
    """A Beam worker reads s3rec_tf.schema (and so runs s3rec_tf/__init__ and keras_models/
    __init__) without loading TensorFlow; Keras 2 is still selected for whoever loads it later,
    and the parsing specs still build on first use. In a fresh process: this one has TensorFlow."""
    code = (
        "import os, sys\n"
        "import s3rec_tf, s3rec_tf.schema, keras_models\n"
        "from beam_pipelines import config, formats, parse, preprocess, writers\n"
        f"roots = {sorted(TENSORFLOW)!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "assert not loaded, loaded[:5]\n"
        "assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
        "assert set(s3rec_tf.schema.TRAIN_FEATURES) == {'user', 'history', 'heldout'}\n"
        "import tensorflow as tf\n"
        "assert tf.keras.__name__.startswith('tf_keras'), tf.keras.__name__\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


def test_the_study_tooling_and_the_files_it_shares_load_no_tensorflow_at_import():
    # The sweep plans, checks and takes its lock before it loads the training CLI.
    modules = ["s3rec_tf.sweep", "s3rec_tf.report", "s3rec_tf.jsonfile", "s3rec_tf.config"]
    modules += sorted(m for m in MODULES if m.startswith("s3rec_tf.study"))
    loading = [m for m in modules if _loads_tensorflow(m)]
    assert loading == [], f"load TensorFlow at import: {loading}"
