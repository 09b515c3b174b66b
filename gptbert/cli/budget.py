"""Train within a wall-clock budget (the CPU quickstart): plan, run a first stretch, plan again.

The schedules (LR, batch ramp, row lengths) are functions of step / max_steps, so a run must know
its length before it starts. `calibrate.measure_step_costs` times a few steps on random tokens and
fits the budget; that plan is only as good as that moment of the machine and that model of a step.
On the AMX Xeon the 60-minute quickstart's real loop ran 14-17% slower than its timed steps in the
64- and 128-token phases (2% in the 256-token one), and the budget stopped it at step 3,961 of the
4,058 planned, inside the last phase, before the end of the cosine (2026-12-03, README "Side by
side with a plain GPT-2"). The 0.92 margin that covers this at 10 minutes did not at 60.

So a budgeted run trains in two legs:
1. plan n0 steps from the timed costs in PLAN_MARGIN of the budget, and train the first
   FIRST_LEG of them (the 64-token rows at the start of the batch ramp);
2. compare the loop's own seconds for those steps (from its metrics rows, so the first steps'
   warm-up is left out) with the cost model's estimate for the same steps, rescale the model by
   that ratio, and fit the rest of the schedule into REPLAN_MARGIN of the time left: n1 steps in
   all. The second leg resumes the first leg's checkpoint with max_steps = n1, an ordinary resume.

What this trades: the first leg's steps ran under the n0 schedule (its warmup and batch ramp are
fractions of n0), so the run folder's config.yaml (max_steps = n1) reproduces the run exactly from
the first leg's checkpoint on, not from step 0; `plan` (the quickstart writes it to budget.json)
records both plans. The trainer's time budget stays a hard stop in both legs.
"""

from __future__ import annotations

import copy
import dataclasses
import time

from ..calibrate import StepCosts, measure_step_costs
from ..config import RunConfig
from ..train import TrainResult, train

PLAN_MARGIN = 0.92  # the first plan's share of the budget: a fresh timing is off by up to ~10%
FIRST_LEG = 0.1  # share of the first plan trained before planning again
MIN_FIRST_LEG = 20  # steps: a plan whose first leg would be shorter trains in one leg
REPLAN_MARGIN = 0.97  # the second plan's share of the time left (its model is measured on this run)


def loop_rate(result: TrainResult, costs: StepCosts, cfg: RunConfig) -> float:
    """Seconds the loop spent on its steps / seconds `costs` estimates for the same steps.

    From the first to the last metrics row of `result` (the steps before the first row carry the
    warm-up: the first allocations and kernel choices); over the whole leg when it logged fewer
    than two rows."""
    rows = [r for r in result.history if "elapsed_s" in r]
    if len(rows) >= 2 and rows[-1]["step"] > rows[0]["step"]:
        a, b = rows[0], rows[-1]
        spent, start, stop = b["elapsed_s"] - a["elapsed_s"], a["step"], b["step"]
    else:
        spent, start, stop = result.seconds, 0, result.steps
    return spent / max(costs.seconds(cfg, cfg.train.max_steps, start, stop), 1e-9)


def train_in_budget(cfg: RunConfig, minutes: float, costs: StepCosts | None = None,
                    log=print) -> tuple[TrainResult, dict]:
    """Train `cfg` (its max_steps is replaced) in `minutes` of wall-clock time, in two legs.

    Returns the run's result (steps, tokens and checkpoint of the whole run; seconds and metrics
    rows of both legs) and the plan: both step counts, the first leg, the measured rate.
    """
    t0 = time.perf_counter()
    budget_s = minutes * 60
    cfg = copy.deepcopy(cfg)
    costs = costs if costs is not None else measure_step_costs(cfg)
    n0 = costs.fit(cfg, budget_s * PLAN_MARGIN)
    cfg.train.max_steps = n0
    cfg.train.time_budget = minutes
    k = round(n0 * FIRST_LEG)
    plan = {"budget_s": round(budget_s, 1), "planned_steps": n0, "per_token_s": {str(T): c for T, c in costs.per_token.items()},
            "update_s": costs.update, "scale": costs.scale}
    log(f"      plan: {n0} steps (~{budget_s * PLAN_MARGIN / n0:.2f}s each) in {PLAN_MARGIN:.0%} of the budget")
    if k < MIN_FIRST_LEG:
        result = train(cfg)
        return result, {**plan, "first_leg_steps": None, "steps": n0}

    first = train(cfg, max_steps_to_run=k, validate=False)
    if first.stopped is not None:  # a signal or (on a machine gone very slow) the budget itself
        return first, {**plan, "first_leg_steps": k, "steps": n0, "stopped": first.stopped}
    rate = loop_rate(first, costs, cfg)
    left = budget_s - (time.perf_counter() - t0)
    n1 = costs.rescaled(rate).fit(cfg, left * REPLAN_MARGIN, done=first.steps)
    plan.update(first_leg_steps=first.steps, first_leg_s=round(first.seconds, 2), rate=rate,
                seconds_left=round(left, 2), steps=n1)
    log(f"      after {first.steps} steps ({first.seconds:.0f}s): the loop runs at {rate:.2f}x the timed estimate, "
        f"so {n1} steps in all")
    cfg.train.max_steps = n1
    cfg.train.time_budget = max(left, 1.0) / 60
    second = train(cfg, resume="auto")
    result = dataclasses.replace(second, seconds=first.seconds + second.seconds, history=first.history + second.history)
    plan.update(trained_steps=result.steps, stopped=result.stopped)  # stopped: None when the schedule ended
    return result, plan
