"""Train within a wall-clock budget (the CPU quickstart): plan, run a stretch, plan again.

The schedules (LR, batch ramp, row lengths) are functions of step / max_steps, so a run must know
its length before it starts. `calibrate.measure_step_costs` times a few steps on random tokens and
fits the budget; that plan is only as good as that moment of the machine and that model of a step.
Two things made one plan miss on the AMX Xeon (2026-12-03):
- the real loop ran 14-17% slower than its timed steps in the 64- and 128-token phases but only 2%
  slower in the 256-token one, so no single correction factor fits every phase;
- the VM itself slowed down by a third for ten minutes in the middle of a 50-minute run.
A 60-minute quickstart with one plan was stopped by the budget at step 3,961 of 4,058, inside the
last phase, before the end of the cosine; with one re-plan after the first 10% the 50-minute one
still ended at 98.4% of its steps (README "Planning a budget").

So a budgeted run trains in legs:
1. plan n steps from the timed costs in PLAN_MARGIN of the budget;
2. train up to the next point of REPLAN_AT (a fraction of the current plan: the first 10%, then
   the middle of each row-length phase, 64 -> 128 -> 256 tokens at 70% and 90%). The first steps
   of a new row length are slow (new allocations and kernel choices: one 10-step interval across
   the 128 -> 256 change took 1.5x the estimate in a 10-minute run), and the last phase's rate is
   only known once it has started, so the last point is kept even when few steps follow it;
3. compare the loop's own seconds on that leg (between its metrics rows, so each leg's warm-up
   is left out) with the cost model's estimate for the same steps: one rate for the whole leg,
   and one per row length the leg ran at. Rescale the model by them (the latest leg's rate for a
   length it has not seen yet) and fit the rest of the schedule into REPLAN_MARGIN of the time
   left, less what the leg cost beyond its steps at those rates (setup, resume, the first steps'
   warm-up, the checkpoint), which the next leg pays again: ~3 s in a 10-minute quickstart whose
   last leg had 36 s. The new length never moves the next step into another row-length phase (`_keep_phase`),
   so the rows only ever grow. Each leg resumes the previous leg's checkpoint: an ordinary resume.

What this trades: every leg ran under its own plan (warmup, batch ramp, cosine and phases are
fractions of it), so the run folder's config.yaml (the last plan) reproduces the run exactly from
the last leg's checkpoint on, not from step 0; `plan` (the quickstart writes it to budget.json)
records every leg. Each leg boundary costs a checkpoint and a restart of the loop (1-5 s on the
quickstart's model); a leg shorter than MIN_LEG steps is not worth one and is merged into the next.
The trainer's time budget stays a hard stop in every leg.
"""

from __future__ import annotations

import copy
import dataclasses
import time

from ..calibrate import StepCosts, measure_step_costs
from ..config import RunConfig
from ..data import step_shape
from ..train import TrainResult, train

PLAN_MARGIN = 0.92  # the first plan's share of the budget: a fresh timing is off by up to ~10%
REPLAN_AT = (0.1, 0.5, 0.8, 0.95)  # fractions of the current plan where it is fitted again
MIN_LEG = 20  # steps: a re-plan point closer than this to the previous one is skipped
MIN_TAIL = 5  # steps: and one closer than this to the end (the last point fits the last phase's own rate)
REPLAN_MARGIN = 0.97  # each later plan's share of the time left (its model is measured on this run)


def _with_steps(cfg: RunConfig, n: int) -> RunConfig:
    trial = copy.deepcopy(cfg)
    trial.train.max_steps = n
    return trial


def leg_rates(leg: TrainResult, costs: StepCosts, cfg: RunConfig, start: int) -> tuple[float, dict[int, float]]:
    """Seconds the loop spent / seconds `costs` estimates, over the leg's steps [start, leg.steps).

    Measured between consecutive metrics rows (the steps before the first row carry the warm-up:
    the first allocations and kernel choices): over all of them, and per row length over the
    intervals whose steps all have that length (cfg: the plan the leg ran under). A leg with fewer
    than two rows is measured whole, from `start`."""
    n = cfg.train.max_steps
    trial = _with_steps(cfg, n)
    rows = [r for r in leg.history if "elapsed_s" in r]
    spent: dict[int | None, float] = {}
    model: dict[int | None, float] = {}
    for a, b in zip(rows, rows[1:]):
        if b["step"] <= a["step"]:
            continue
        loop_s, est = b["elapsed_s"] - a["elapsed_s"], costs.seconds(cfg, n, a["step"], b["step"])
        lengths = {step_shape(s, trial).seq_length for s in range(a["step"], b["step"])}
        for key in [None, *lengths] if len(lengths) == 1 else [None]:
            spent[key] = spent.get(key, 0.0) + loop_s
            model[key] = model.get(key, 0.0) + est
    if None not in spent:
        spent[None], model[None] = leg.seconds, costs.seconds(cfg, n, start, leg.steps)
    rates = {key: spent[key] / max(model[key], 1e-9) for key in spent}
    return rates.pop(None), rates


def _keep_phase(cfg: RunConfig, done: int, old: int, new: int) -> int:
    """`new`, moved just enough that step `done` has the row length it has in an `old`-step plan."""
    trial = _with_steps(cfg, old)

    def length_at(n: int) -> int:
        trial.train.max_steps = n
        return step_shape(done, trial).seq_length

    length = length_at(old)
    while new > done + 1 and length_at(new) < length:
        new -= 1  # a longer plan would send the next steps back to shorter rows
    while length_at(new) > length:
        new += 1  # a shorter plan would jump ahead to longer rows
    return new


def _next_stop(points: list[float], n: int, done: int) -> int | None:
    """Pop the re-plan points (fractions of an n-step plan) up to the first one at least MIN_LEG
    steps after `done` and MIN_TAIL before the end; its step, or None when no point is left."""
    while points:
        k = round(points.pop(0) * n)
        if k - done >= MIN_LEG and n - k >= MIN_TAIL:
            return k
    return None


def train_in_budget(cfg: RunConfig, minutes: float, costs: StepCosts | None = None,
                    log=print) -> tuple[TrainResult, dict]:
    """Train `cfg` (its max_steps is replaced) in `minutes` of wall-clock time, in legs.

    Returns the run's result (steps, tokens and checkpoint of the whole run; seconds and metrics
    rows of all legs) and the plan: the first and last step counts and every leg.
    """
    t0 = time.perf_counter()
    budget_s = minutes * 60
    cfg = copy.deepcopy(cfg)
    costs = costs if costs is not None else measure_step_costs(cfg)
    n = costs.fit(cfg, budget_s * PLAN_MARGIN)
    plan = {"budget_s": round(budget_s, 1), "planned_steps": n,
            "per_token_s": {str(T): c for T, c in costs.per_token.items()},
            "update_s": costs.update, "scale": costs.scale, "legs": []}
    log(f"      plan: {n} steps (~{budget_s * PLAN_MARGIN / n:.2f}s each) in {PLAN_MARGIN:.0%} of the budget")
    done, legs, points = 0, [], list(REPLAN_AT)
    while True:
        stop = _next_stop(points, n, done)
        cfg.train.max_steps = n
        cfg.train.time_budget = max(budget_s - (time.perf_counter() - t0), 1.0) / 60
        t_leg = time.perf_counter()
        leg = train(cfg, resume="auto" if done else None,
                    max_steps_to_run=None if stop is None else stop - done, validate=stop is None)
        wall = time.perf_counter() - t_leg
        legs.append(leg)
        record = {"from_step": done, "to_step": leg.steps, "plan_steps": n, "seconds": round(leg.seconds, 2),
                  "wall_s": round(wall, 3)}
        plan["legs"].append(record)
        if stop is None or leg.stopped is not None:  # the end, a signal, or the budget itself
            break
        rate, by_length = leg_rates(leg, costs, cfg, done)
        measured = costs.rescaled(rate, by_length)
        # What the leg cost beyond its steps at the measured rates: setup, resume, the first steps'
        # warm-up, the checkpoint. The next leg pays it again, so it comes out of the time left.
        overhead = max(wall - measured.seconds(cfg, n, done, leg.steps), 0.0)
        left = budget_s - (time.perf_counter() - t0)
        done = leg.steps
        fitted = measured.fit(cfg, (left - overhead) * REPLAN_MARGIN, done=done)
        new = _keep_phase(cfg, done, n, fitted)
        record.update(rate=rate, rates_by_length={str(T): r for T, r in by_length.items()},
                      overhead_s=round(overhead, 3), seconds_left=round(left, 2), fitted_steps=fitted,
                      next_plan_steps=new)
        lengths = "".join(f", {T}-token rows {r:.2f}x" for T, r in sorted(by_length.items()))
        log(f"      after {done} steps: the loop ran at {rate:.2f}x the timed estimate{lengths}, so {new} steps in all")
        n = new
    result = dataclasses.replace(legs[-1], seconds=sum(leg.seconds for leg in legs),
                                 history=[row for leg in legs for row in leg.history])
    plan.update(steps=n, first_leg_steps=legs[0].steps if len(legs) > 1 else None,
                trained_steps=result.steps, stopped=result.stopped)  # stopped: None when the schedule ended
    return result, plan
