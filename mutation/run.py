"""Mutation testing of the modules where a silent bug costs most (``make mutate``; not part of CI).

Each module is mutated by cosmic-ray (in place, one mutant at a time, restored after each) and
tested by its own test files only, on one core, so that a module's run takes minutes. Results
go to ``out/mutation/``: the cosmic-ray session of each module, its survivors as diffs, and
``summary.md`` with the score per module (killed / (killed + survived)).

    python mutation/run.py                       # every module, smallest first
    python mutation/run.py megatron minhash      # some modules
    python mutation/run.py --list                # the modules, their tests and mutant counts
    python mutation/run.py --unsample parallel   # run the mutants that an earlier --sample left out
    python mutation/run.py --report              # re-filter and summarise the existing sessions

Operators: :data:`KEPT_OPERATORS`, the nearest mutant(s) of each site (``<`` -> ``<=``, ``==`` -> ``!=``,
``+`` -> ``-``, a number +-1, ``True`` -> ``False``, ``and`` -> ``or``, an added ``not``, a loop that
never runs, a removed decorator, a changed ``except``), not every operator swap.
A line marked ``# pragma: no mutate`` is not mutated (cr-filter-pragma), nor is an annotation of a module
with ``from __future__ import annotations``: Python never evaluates it (PEP 563), so each of its mutants
would survive (mutmut likewise never mutates annotations).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "mutation"
BIN = Path(sys.executable).parent
log = logging.getLogger("mutation")

# One or two "nearest" mutants per site (as mutmut makes them) rather than every operator swap:
# a boundary shift or a negation of each comparison, the inverse of each arithmetic operator.
KEPT_OPERATORS = {
    *(f"core/ReplaceBinaryOperator_{a}_{b}" for a, b in [
        ("Add", "Sub"), ("Sub", "Add"), ("Mul", "Div"), ("Div", "Mul"), ("FloorDiv", "Div"), ("Mod", "FloorDiv"),
        ("Pow", "Mul"), ("LShift", "RShift"), ("RShift", "LShift"), ("BitOr", "BitAnd"), ("BitAnd", "BitOr"),
        ("BitXor", "BitOr")]),
    *(f"core/ReplaceComparisonOperator_{a}_{b}" for a, b in [
        ("Eq", "NotEq"), ("NotEq", "Eq"), ("Lt", "LtE"), ("LtE", "Lt"), ("Gt", "GtE"), ("GtE", "Gt"),
        ("Is", "IsNot"), ("IsNot", "Is")]),
    "core/ReplaceUnaryOperator_USub_UAdd", "core/ReplaceUnaryOperator_Delete_Not", "core/ReplaceUnaryOperator_Delete_USub",
    "core/AddNot", "core/ReplaceTrueWithFalse", "core/ReplaceFalseWithTrue", "core/ReplaceAndWithOr",
    "core/ReplaceOrWithAnd", "core/ReplaceBreakWithContinue", "core/ReplaceContinueWithBreak",
    "core/ExceptionReplacer", "core/NumberReplacer", "core/RemoveDecorator", "core/ZeroIterationForLoop",
}


def excluded_operators() -> list[str]:
    """cosmic-ray filters operators by exclusion: every operator not kept, as an exact regex."""
    from cosmic_ray.plugins import operator_names

    return sorted(f"{name}$" for name in operator_names() if name not in KEPT_OPERATORS)


@dataclass(frozen=True)
class Module:
    """A module under mutation, the tests that judge it, and (optionally) the functions to mutate."""

    path: str
    tests: list[str]
    timeout: float  # seconds per mutant: about 3x the unmutated run on a busy 2-core machine
    functions: tuple[str, ...] = ()  # mutate only these functions (empty: the whole module)
    blocks: tuple[str, ...] = ()  # ... and the `if <test>:` blocks whose test reads like this
    notes: str = field(default="")


PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
MODULES: dict[str, Module] = {
    "megatron": Module("data/megatron.py", ["tests/test_megatron.py", "-k", "not real_pack"], 90),
    # about 3 s per run (the tables built once per process, checked first); a hypothesis example that fails is not
    # shrunk (CPM_HYPOTHESIS_PROFILE=mutation). A timeout of 20 runs keeps a busy machine from killing slow survivors.
    "minhash": Module("pipeline/minhash.py", ["tests/test_minhash.py"], 60),
    # test_tokenizer_model.py first (seconds: a 300-line tokenizer, CPM-1's vocabulary); then the CPM-1
    # exactness and round-trip tests. Not the training and CLI tests (train.py, cli.py), nor
    # every_shared_line (50 s), which re-checks on all lines what the hypothesis and real-line tests check.
    "tokenizer": Module("tokenizer/model.py", [
        "tests/test_tokenizer_model.py", "tests/test_tokenizer.py", "-k",
        "not every_shared_line and not compact and not trained_directory and not training and not sample_sentences"
        " and not vocab_size_too_large and not small_vocab and not empty_corpus and not cli_ and not jsonl and not json_line",
    ], 300),
    # test_checkpoint_ranks saves and reshards TP2 x DP2 checkpoints (plain and ZeRO) on 4 forked gloo ranks
    "checkpoint": Module("trainer/checkpoint.py", ["tests/test_checkpoint.py", "tests/test_checkpoint_ranks.py"], 600),
    # fastest first (-x stops at the first failure); test_parallel_ranks runs every collective on 4 forked
    # gloo ranks in seconds, where test_tp_oracles / test_tensor_parallel spawn fresh interpreters (a minute).
    # The forked tests' ranks time out after 60 s, so a mutant that desynchronises a collective fails
    # rather than hangs, and the generous timeout only keeps a slow (busy) run from counting as a kill.
    "parallel": Module("trainer/parallel.py",
                       ["tests/test_parallel.py", "tests/test_parallel_ranks.py", "tests/test_model.py"], 600),
    # the TP=2 resume test (two processes, minutes on a busy machine) is left out: the resume functions' lines
    # that it runs hold no mutable operator that the TP=1 and unit tests do not run too
    "train-resume": Module(
        "trainer/train.py", ["tests/test_train.py", "-k", "(truncate or resume) and not tp2"], 420,
        functions=("resume_training", "restore_loader", "trainer_state", "get_rng_states", "set_rng_states",
                   "truncate_metrics"),
    ),
    # the steps of dedup against their unit tests (no Beam, seconds per mutant)
    "dedup": Module("pipeline/dedup.py", ["tests/test_dedup_steps.py", "-p", "no:hypothesispytest"], 120),
    # the file I/O around them against the staged build on chosen texts, every task in the test's process
    "dedup-stages": Module("pipeline/dedup_stages.py", ["tests/test_dedup.py", "-p", "no:hypothesispytest", "-k", "quick"], 300),
}


def line_ranges(module: Module) -> list[str]:
    """``"start-end"`` line ranges of the module's selected functions and blocks (empty: everything)."""
    if not module.functions and not module.blocks:
        return []
    tree = ast.parse((REPO / module.path).read_text("utf-8"))
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in module.functions:
            ranges.append(f"{node.lineno}-{node.end_lineno}")
        elif isinstance(node, ast.If) and ast.unparse(node.test) in module.blocks:
            ranges.append(f"{node.lineno}-{node.end_lineno}")
    if len(ranges) < len(module.functions) + len(module.blocks):
        raise SystemExit(f"{module.path}: not every function of {module.functions} / block of {module.blocks} was found")
    return ranges


def write_config(name: str, module: Module) -> Path:
    test_command = shlex.join([sys.executable, "-m", "pytest", *PYTEST, *module.tests])
    lines = [
        "[cosmic-ray]",
        f"module-path = {json.dumps(module.path)}",
        f"timeout = {float(module.timeout)}",
        "excluded-modules = []",
        f"test-command = {json.dumps(test_command)}",
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(excluded_operators())}",
    ]
    ranges = line_ranges(module)
    if ranges:
        lines += ["", "[cosmic-ray.filters.line-filter]", f"lines = {{ {json.dumps(module.path)} = {json.dumps(ranges)} }}"]
    path = OUT / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def copy_tree(tree: Path) -> Path:
    """A fresh copy of the working tree's files (tracked and untracked, not ignored) at ``tree/cpm``,
    imported as ``cpm`` (PYTHONPATH=tree), so that the working tree itself is never mutated and
    modules can run side by side; ../shared is linked beside it."""
    import shutil

    package = tree / "cpm"
    shutil.rmtree(tree, ignore_errors=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, package / name)
    if (REPO.parent / "shared").is_dir():
        (tree / "shared").symlink_to(REPO.parent / "shared")
    return package


def tool(*args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, check=True, env=env)


def session_counts(session: Path) -> dict[str, int]:
    """Killed / survived / skipped / incompetent / pending mutants of a session."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = dict.fromkeys(("killed", "survived", "skipped", "incompetent", "pending"), 0)
    with use_db(str(session), WorkDB.Mode.open) as db:
        counts["pending"] = sum(1 for _ in db.pending_work_items)
        for _, result in db.results:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                counts["skipped"] += 1
            elif result.worker_outcome != WorkerOutcome.NORMAL or result.test_outcome == TestOutcome.INCOMPETENT:
                counts["incompetent"] += 1
            elif result.test_outcome == TestOutcome.KILLED:
                counts["killed"] += 1
            else:
                counts["survived"] += 1
    return counts


def survivors(session: Path) -> list[str]:
    """Each surviving mutant as ``job id, operator, line`` and its diff."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    found = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.NORMAL and result.test_outcome == TestOutcome.SURVIVED:
                spec = item.mutations[0]
                found.append(f"## {item.job_id} {spec.operator_name} line {spec.start_pos[0]}\n{result.diff}")
    return found


def sample_pending(session: Path, keep: int, seed: int = 0) -> int:
    """Skip all but ``keep`` pending mutants, drawn at random (a score estimate for slow modules)."""
    import random

    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sorted(item.job_id for item in db.pending_work_items)
        skipped = set(pending) - set(random.Random(seed).sample(pending, min(keep, len(pending))))
        db.set_multiple_results(sorted(skipped), WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    log.info("%s: %d of %d pending mutants sampled", session.name, len(pending) - len(skipped), len(pending))
    return len(pending)


def forget_survivors(session: Path) -> int:
    """Make the surviving mutants of a session pending again (to rerun them after adding tests), and those
    killed by a timeout (cosmic-ray's, or a collective's in the forked gloo ranks): on a busy machine a
    timeout may be a slow survivor rather than a hang."""
    import sqlite3

    with sqlite3.connect(session) as db:
        return db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED' OR (test_outcome = 'KILLED' "
                          "AND (output = 'timeout' OR output LIKE '%Timed out%'))").rowcount


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``((row, col), (end_row, end_col))`` of every annotation that Python never evaluates: the argument,
    return and variable (``x: T``) annotations of a module with ``from __future__ import annotations``
    (PEP 563: they are kept as strings). Columns count characters, as cosmic-ray's positions do."""
    tree = ast.parse(source)
    future = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
                 and any(alias.name == "annotations" for alias in node.names) for node in tree.body)
    if not future:
        return []
    lines = source.splitlines()

    def column(row: int, byte_offset: int) -> int:  # ast counts UTF-8 bytes, parso characters
        return len(lines[row - 1].encode("utf-8")[:byte_offset].decode("utf-8"))

    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            annotations += [a.annotation for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                                   arguments.vararg, arguments.kwarg) if a is not None and a.annotation]
            if not isinstance(node, ast.Lambda) and node.returns is not None:
                annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    return [((a.lineno, column(a.lineno, a.col_offset)), (a.end_lineno, column(a.end_lineno, a.end_col_offset)))
            for a in annotations]


def skip_annotations(session: Path, source: str) -> int:
    """Mark SKIPPED every mutant inside an annotation that is never evaluated (see :func:`annotation_spans`),
    run or not (mutmut does not mutate annotations either). Returns how many."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    spans = annotation_spans(source)
    with use_db(str(session), WorkDB.Mode.open) as db:
        outcomes = {item.job_id: None for item in db.pending_work_items}
        outcomes.update({item.job_id: result for item, result in db.completed_work_items})
        inside = [item.job_id for item in db.work_items
                  if any(start <= tuple(item.mutations[0].start_pos) and tuple(item.mutations[0].end_pos) <= end
                         for start, end in spans)]
        inside = [job for job in inside if not (outcomes[job] and outcomes[job].worker_outcome == WorkerOutcome.SKIPPED)]
        killed = [job for job in inside if outcomes[job] and outcomes[job].test_outcome == TestOutcome.KILLED]
        if killed:  # an annotation that is never evaluated cannot fail a test: say so rather than hide it
            log.warning("%s: %d mutants inside annotations had been killed: %s", session.name, len(killed), killed)
        db.set_multiple_results(inside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    log.info("%s: %d mutants inside never-evaluated annotations skipped", session.name, len(inside))
    return len(inside)


def filter_session(module: Module, session: Path, config: Path, cwd: Path, env: dict[str, str]) -> None:
    """The filters of a session: operators outside :data:`KEPT_OPERATORS`, ``# pragma: no mutate`` lines, the
    lines outside the module's functions/blocks, and annotations. Each marks its mutants SKIPPED, so
    running them again on an existing session skips what a changed pragma or filter now excludes."""
    tool("cr-filter-operators", str(session), str(config), cwd=cwd, env=env)
    tool("cr-filter-pragma", str(session), cwd=cwd, env=env)
    if line_ranges(module):
        tool("cr-filter-lines", str(session), "--config", str(config), cwd=cwd, env=env)
    skip_annotations(session, (cwd / module.path).read_text("utf-8"))


def source_digest(module: Module) -> str:
    """A digest of the module's syntax tree with positions (not its comments): a session's mutants, given by
    operator, occurrence and position, are those of any source with the same digest."""
    tree = ast.parse((REPO / module.path).read_text("utf-8"))
    return hashlib.sha256(ast.dump(tree, include_attributes=True).encode()).hexdigest()


def replays(session: Path, source: str) -> bool:
    """Whether every mutant recorded with a diff in the session gives that diff on ``source``."""
    import sqlite3

    import cosmic_ray.plugins
    from cosmic_ray.mutating import _make_diff, mutate_code

    with sqlite3.connect(session) as db:
        rows = db.execute("SELECT s.operator_name, s.occurrence, s.module_path, r.diff FROM mutation_specs s "
                          "JOIN work_results r USING (job_id) WHERE r.diff IS NOT NULL AND r.diff != ''").fetchall()
    for operator_name, occurrence, module_path, diff in rows:
        mutated = mutate_code(source, cosmic_ray.plugins.get_operator(operator_name)(), occurrence)
        if mutated is None or "\n".join(_make_diff(source, mutated, module_path)) != diff:
            return False
    return True


def check_session(name: str, module: Module, session: Path) -> None:
    """Refuse to resume a session made from another version of the module (its positions would be stale).
    A session without a recorded digest is accepted when its recorded diffs replay on the module."""
    digest_file = OUT / f"{name}-source.json"
    digest = source_digest(module)
    if digest_file.exists():
        recorded = json.loads(digest_file.read_text("utf-8"))["ast_sha256"]
        if recorded != digest:
            raise SystemExit(f"{session}: made from another version of {module.path}; run without --resume")
        return
    if not replays(session, (REPO / module.path).read_text("utf-8")):
        raise SystemExit(f"{session}: its mutants do not replay on {module.path}; run without --resume")
    digest_file.write_text(json.dumps({"ast_sha256": digest}) + "\n", "utf-8")


def unsample(name: str, session: Path, scratch: Path) -> int:
    """Make pending again the SKIPPED mutants of ``session`` that the filters alone (the freshly initialised
    and filtered ``scratch`` session) keep pending: those skipped by ``--sample`` or never run.
    Mutants are matched by (operator, occurrence, position). Returns how many."""
    import sqlite3

    key = "s.operator_name, s.occurrence, s.start_pos_row, s.start_pos_col, s.end_pos_row, s.end_pos_col"
    with sqlite3.connect(scratch) as db:
        every = set(db.execute(f"SELECT {key} FROM mutation_specs s"))
        keep = set(db.execute(f"SELECT {key} FROM mutation_specs s WHERE s.job_id NOT IN (SELECT job_id FROM work_results)"))
    with sqlite3.connect(session) as db:
        if set(db.execute(f"SELECT {key} FROM mutation_specs s")) != every:
            raise SystemExit(f"{session}: its mutants are not those of the module now; run without --resume")
        skipped = db.execute(f"SELECT r.job_id, {key} FROM work_results r JOIN mutation_specs s USING (job_id) "
                             "WHERE r.worker_outcome = 'SKIPPED'").fetchall()
        back = [(job,) for job, *spec in skipped if tuple(spec) in keep]
        db.executemany("DELETE FROM work_results WHERE job_id = ?", back)
    (OUT / f"{name}-candidates.json").write_text("0")
    log.info("%s: %d skipped mutants pending again", name, len(back))
    return len(back)


def run_module(name: str, module: Module, resume: bool, sample: int = 0, rerun: bool = False,
               unsampled: bool = False) -> dict[str, object]:
    """Init (unless resuming), filter, run every pending mutant, and return the counts."""
    tree = OUT / f"tree-{name}"
    package = copy_tree(tree)
    source = package / module.path
    original = source.read_bytes()
    config = write_config(name, module)
    session = OUT / f"{name}.sqlite"
    env = dict(os.environ, PYTHONPATH=str(tree), CPM_HYPOTHESIS_PROFILE="mutation", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if not (resume and session.exists()):
        (OUT / f"{name}.json").unlink(missing_ok=True)  # the counts and wall time of an earlier session
        tool("cosmic-ray", "init", str(config), str(session), "--force", cwd=package, env=env)
        filter_session(module, session, config, package, env)
        (OUT / f"{name}-source.json").write_text(json.dumps({"ast_sha256": source_digest(module)}) + "\n", "utf-8")
        candidates = sample_pending(session, sample) if sample else 0
        (OUT / f"{name}-candidates.json").write_text(json.dumps(candidates))
    else:
        check_session(name, module, session)
        filter_session(module, session, config, package, env)
        if unsampled:
            scratch = OUT / f"{name}-scratch.sqlite"
            tool("cosmic-ray", "init", str(config), str(scratch), "--force", cwd=package, env=env)
            filter_session(module, scratch, config, package, env)
            unsample(name, session, scratch)
            scratch.unlink()
        if rerun:
            log.info("%s: %d survivors to run again", name, forget_survivors(session))
    started = time.perf_counter()
    try:
        tool("cosmic-ray", "exec", str(config), str(session), cwd=package, env=env)
    finally:
        if source.read_bytes() != original:  # an interrupted run must not leave a mutant behind
            source.write_bytes(original)
            log.error("%s: restored the original after an interrupted run", module.path)
    return report(name, module, round(time.perf_counter() - started))


def report(name: str, module: Module, ran_s: int | None = None) -> dict[str, object]:
    """Counts, score and survivors of a module's session, written to ``<name>.json`` and ``<name>-survivors.md``.
    ``wall_s`` sums the runs of the session (``ran_s``: this one); ``wall_s_incomplete`` when an earlier
    run's time is not known (a stopped run)."""
    session = OUT / f"{name}.sqlite"
    counts = session_counts(session)
    scored = counts["killed"] + counts["survived"]
    candidates = OUT / f"{name}-candidates.json"
    sampled_from = json.loads(candidates.read_text()) if candidates.exists() else 0
    previous = OUT / f"{name}.json"
    earlier = json.loads(previous.read_text("utf-8")) if previous.exists() else {}
    incomplete = earlier.get("wall_s_incomplete", False) or (previous.exists() and earlier.get("wall_s") is None)
    wall_s = earlier.get("wall_s") or 0
    wall_s = wall_s + ran_s if ran_s is not None else (wall_s or None)
    result = {"module": module.path, **counts, "sampled_from": sampled_from or None,
              "score": counts["killed"] / scored if scored else None, "wall_s": wall_s, "wall_s_incomplete": incomplete,
              "tests": " ".join(module.tests)}
    (OUT / f"{name}-survivors.md").write_text("\n".join(survivors(session)) + "\n", "utf-8")
    previous.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return result


def write_summary() -> Path:
    rows = ["| run | module | mutants tested | killed | survived | skipped (filters) | not run | score | wall s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in MODULES:
        path = OUT / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text("utf-8"))
        score = "n/a" if r["score"] is None else f"{100 * r['score']:.1f}%"
        sampled = f" (sample of {r['sampled_from']})" if r.get("sampled_from") else ""
        wall = f"> {r['wall_s']}" if r.get("wall_s_incomplete") else r["wall_s"]
        rows.append(f"| {name} | {r['module']} | {r['killed'] + r['survived']}{sampled} | {r['killed']} | {r['survived']} | "
                    f"{r['skipped']} | {r['pending']} | {score} | {wall} |")
    path = OUT / "summary.md"
    path.write_text("\n".join(rows) + "\n", "utf-8")
    return path


def list_modules() -> None:
    for name, module in MODULES.items():
        ranges = line_ranges(module)
        digest = hashlib.sha256((REPO / module.path).read_bytes()).hexdigest()[:12]
        print(f"{name:13} {module.path:24} {digest} lines {','.join(ranges) or 'all':18} tests: {' '.join(module.tests)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python mutation/run.py megatron minhash")
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"modules to run (default: all): {', '.join(MODULES)}")
    parser.add_argument("--resume", action="store_true", help="continue existing sessions instead of starting afresh")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="continue existing sessions and test their surviving mutants again (after adding tests), "
                             "and those that the timeout killed")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="run only N mutants of each module, drawn at random (an estimate; default 0: all)")
    parser.add_argument("--unsample", action="store_true",
                        help="continue existing sessions, first making pending again the mutants that --sample or a "
                             "stopped run left out (those that the filters alone keep)")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument("--report", action="store_true", help="only summarise the existing sessions (also unfinished ones)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r} (choose from {', '.join(MODULES)})")
    if args.list:
        list_modules()
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    if args.report:
        for name in args.modules or list(MODULES):
            session = OUT / f"{name}.sqlite"
            if session.exists():
                try:
                    check_session(name, MODULES[name], session)
                except SystemExit as stale:
                    log.error("%s", stale)
                    continue
                filter_session(MODULES[name], session, write_config(name, MODULES[name]), REPO, dict(os.environ))
                log.info("%s: %s", name, json.dumps(report(name, MODULES[name])))
        log.info("summary: %s", write_summary())
        return 0
    for name in args.modules or list(MODULES):
        result = run_module(name, MODULES[name], args.resume or args.rerun_survivors or args.unsample, args.sample,
                            args.rerun_survivors, args.unsample)
        log.info("%s: %s", name, json.dumps(result))
    log.info("summary: %s", write_summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
