from mnist_lab.experiments.reproduce import lock_differences


def test_lock_differences_name_each_package_that_does_not_match() -> None:
    lock = "# a comment\nscikit-learn==1.9.1\nNumPy==2.4.6  # pinned\nmlflow[auth]==3.17.2\npandas==3.0.0\n"
    installed = {"scikit-learn": "1.9.1", "numpy": "2.4.6", "mlflow": "3.17.2", "pandas": "3.1.1"}
    assert lock_differences(lock, installed) == ["pandas: 3.0.0 -> 3.1.1"]
    assert lock_differences("dagshub==0.7\n", {}) == ["dagshub: 0.7 -> not installed"]


def test_lock_differences_read_hashed_pins() -> None:
    lock = (
        "numpy==2.4.6 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "pandas==3.0.0 \\\n    --hash=sha256:cc\n"
        "flufl-lock==8.2.0 \\\n    --hash=sha256:dd\n"
    )
    installed = {"numpy": "2.4.6", "pandas": "3.1.1", "flufl-lock": "8.2.0"}
    assert lock_differences(lock, installed) == ["pandas: 3.0.0 -> 3.1.1"]


def test_this_environment_matches_the_repositorys_lock_file() -> None:
    from tests.helpers import REPO_ROOT

    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert lock_differences((REPO_ROOT / lock).read_text()) == [], lock


def test_a_dirty_commits_verdict_says_why_a_difference_is_expected() -> None:
    from mnist_lab.experiments.reproduce import Reproduction, as_table

    rows = [("metrics.json:models.sgd.accuracy", 0.95, 0.94)]
    dirty = Reproduction("a" * 40, rows, dirty_because=["metrics.json", "params.yaml: models.sgd.alpha"])
    verdict = as_table(dirty).splitlines()[-1]
    assert verdict.startswith("aaaaaaaaaaaa does NOT reproduce: 1 of 1 metrics differ (a dirty commit")
    assert "dvc.lock disagrees with metrics.json, params.yaml: models.sgd.alpha)" in verdict
    assert "dirty" not in as_table(Reproduction("a" * 40, rows))
