"""The training run: set up once from a config, then step until a budget or a signal stops it.

:func:`train` owns the process-wide side effects (process group, thread count, signal handlers)
and restores them; :class:`Trainer` holds everything one run builds (data, model, optimisers,
schedule) and the run's position (:attr:`Trainer.step`, :attr:`Trainer.train_seconds`) as
explicit attributes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from app.errors import ConfigError
from app.train import distributed, setup
from app.train.autotune import resolve_auto
from app.train.checkpoint import (
    atomic_torch_save,
    cpu_state_dict,
    training_state,
)
from app.train.config import build_model_config
from app.train.distributed import Dist
from app.train.evaluation import eval_lmbdas, evaluate_bitstreams, mean_rows
from app.train.losses import psnr_from_mse
from app.train.objective import build_criterion
from app.train.runlog import EVAL_FIELDS, LOG_FIELDS, RunLog
from app.train.schedule import lmbda_bounds, lpips_weight_scale, sample_lmbda
from app.train.step import TrainForward, train_step
from app.train.stopflag import StopFlag


def train(cfg: dict[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary dict (rank 0 meaningful)."""
    d = distributed.init_distributed(distributed.device_kind(str(cfg["device"])))
    device = distributed.pick_device(str(cfg["device"]), d)
    threads_before = torch.get_num_threads()
    if d.enabled and "auto" in (cfg["bf16"], cfg["threads"]):
        raise ConfigError("bf16/threads 'auto' profile one process; under torchrun set them explicitly")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    if d.enabled:
        torch.distributed.barrier()
    log = RunLog(out, d.main)
    resolve_auto(cfg, log)
    torch.set_num_threads(max(1, int(cfg["threads"])))
    stop = StopFlag()
    stop.install()
    try:
        return Trainer(cfg, out, resume, d, device, log, stop).run()
    finally:
        stop.restore()
        log.close()
        torch.set_num_threads(threads_before)  # in-process callers (tests) keep their setting
        if d.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@dataclass
class LoopClock:
    """The loop's wall-clock marks: its start, the training time before it (from earlier runs of a
    resumed training), and the last save and log."""

    base_seconds: float
    start: float
    last_save: float
    last_log: float
    last_log_step: int

    @classmethod
    def starting(cls, base_seconds: float, step: int) -> LoopClock:
        now = time.perf_counter()
        return cls(base_seconds, now, now, now, step)

    def train_seconds(self, now: float) -> float:
        """Cumulative training time at ``now`` (a ``time.perf_counter()`` value)."""
        return self.base_seconds + (now - self.start)


class Trainer:
    """One training run. Construction does the whole setup (:mod:`app.train.setup`, in a fixed
    order: the RNG draws of model initialisation and data order depend on it); :meth:`run` trains,
    saves and evaluates."""

    def __init__(self, cfg: dict[str, Any], out: Path, resume: bool, d: Dist,
                 device: torch.device, log: RunLog, stop: StopFlag) -> None:
        from app.models.factory import create_model, save_weights

        self.create_model, self.save_weights = create_model, save_weights
        self.cfg, self.out, self.d, self.device, self.log, self.stop = cfg, out, d, device, log, stop
        t_start = time.perf_counter()
        self.seed = seed = int(cfg["seed"])
        self.mcfg = mcfg = build_model_config(cfg)
        arch = mcfg.get("arch", "elic")
        self.uses_text = arch == "taco"
        self.variable = bool(mcfg.get("variable_rate", False))
        log(f"run {cfg['name']}: model {mcfg['name']} ({arch}, N={mcfg['N']}, M={mcfg['M']}, "
            f"variable_rate={self.variable}), device {device}, world {d.world}, threads "
            f"{torch.get_num_threads()}, out {out}")
        self.lo, self.hi = lmbda_bounds(cfg, mcfg)
        self.dataset, self.eval_images = setup.build_data(cfg, log)

        self.model, self.main_params, self.aux_params = setup.build_model(mcfg, seed, create_model, log)
        state = setup.restore_or_init(self.model, cfg, mcfg, out, resume, d, log)
        self.channels_last = bool(cfg["channels_last"])
        self.amp = setup.prepare_model(self.model, cfg, device, log)

        self.captions = setup.all_captions(self.dataset, self.eval_images)
        self.cap_index = {c: i for i, c in enumerate(self.captions)}
        self.text_bank = (setup.build_text_bank(self.captions, cfg, mcfg, out, d, log)
                          if self.uses_text else None)
        self.criterion, self.lpips_mod, joint = build_criterion(
            cfg, device, need_lpips_for_eval=d.main, log=log)
        self.k_p, self.k_j = self.criterion.k_p, self.criterion.k_j
        self.clip_text = joint.embed_text(self.captions).cpu() if joint is not None else None

        self.max_steps = int(cfg["max_steps"]) if cfg["max_steps"] is not None else None
        self.max_minutes = float(cfg["max_minutes"]) if cfg["max_minutes"] is not None else None
        self.optimizer, self.aux_optimizer, self.schedule = setup.build_optimisers(
            cfg, self.main_params, self.aux_params, self.max_steps, self.max_minutes)
        self.step, self.train_seconds = setup.restore_position(
            state, self.optimizer, self.aux_optimizer, self.schedule, seed, d)
        self.fwd: torch.nn.Module = TrainForward(self.model, self.uses_text)
        if d.enabled:
            self.fwd = distributed.wrap_ddp(self.fwd, device, bool(cfg["ddp_find_unused"]))
        self.batch_size = int(cfg["batch_size"])
        self.batches = setup.build_batches(self.dataset, cfg, seed, d, device, self.step)
        self.eval_lmbdas = eval_lmbdas(cfg, self.variable, self.lo, self.hi)
        if d.main:
            (out / "train_config.json").write_text(
                json.dumps(dict(cfg), indent=2, default=str) + "\n", encoding="utf-8")
        log(f"setup took {time.perf_counter() - t_start:.1f} s; training from step {self.step} "
            f"(max_steps {self.max_steps}, max_minutes {self.max_minutes}, λ in [{self.lo:.4g}, "
            f"{self.hi:.4g}], k_P {self.k_p}, k_J {self.k_j}, lr {self.schedule.lr:.3g})")

    # ---- saving and evaluation -------------------------------------------------------------

    def save(self, final: bool = False) -> None:
        """Write ``state.pt`` (rank 0); ``final`` also writes the weights and ``model_config.json``."""
        if not self.d.main:
            return
        payload = training_state(
            step=self.step, train_seconds=self.train_seconds, model=self.model,
            optimizer=self.optimizer, aux_optimizer=self.aux_optimizer, schedule=self.schedule,
            model_config=self.mcfg, config=self.cfg)
        atomic_torch_save(payload, self.out / "state.pt")
        if final:
            weights = self.out / f"{self.mcfg['name']}.safetensors"
            em = self.create_model(self.mcfg)
            em.load_state_dict(payload["model"])
            self.save_weights(em, weights)
            (self.out / "model_config.json").write_text(json.dumps(self.mcfg, indent=2) + "\n",
                                                        encoding="utf-8")
            self.log(f"saved step {self.step}: state.pt and {weights.name}")
        else:
            self.log(f"checkpoint: step {self.step} -> state.pt")

    def _text_for(self, caption: str) -> Tensor:
        assert self.text_bank is not None
        return self.text_bank[self.cap_index[caption]].unsqueeze(0)

    def evaluate(self) -> None:
        """Real-bitstream evaluation of the eval images on a fresh copy of the weights (rank 0)."""
        if not (self.d.main and self.eval_images):
            return
        t0 = time.perf_counter()
        em = self.create_model(self.mcfg)
        em.load_state_dict(cpu_state_dict(self.model))
        em.to(self.device)
        rows = evaluate_bitstreams(em, self.eval_images, self.eval_lmbdas,
                                   self._text_for if self.uses_text else None, self.device,
                                   self.lpips_mod)
        del em
        for r in rows:
            self.log.csv("eval.csv", {"step": self.step, **r}, EVAL_FIELDS)
        means, summary = mean_rows(rows, self.eval_lmbdas)
        for row in means:
            self.log.csv("eval.csv", {"step": self.step, **row}, EVAL_FIELDS)
        self.log(f"eval @ step {self.step} ({len(self.eval_images)} images, "
                 f"{time.perf_counter() - t0:.1f} s): " + summary)

    def _evaluate_in_full_precision(self, restore: bool = True) -> None:
        if self.amp is not None:
            self.amp.enabled = False
        self.evaluate()
        if self.amp is not None and restore:
            self.amp.enabled = True

    # ---- the loop --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train until ``max_steps``, ``max_minutes`` or a signal; save, evaluate, summarise."""
        self.clock = LoopClock.starting(self.train_seconds, self.step)
        self.bad_steps = 0
        while True:
            reason = self._stop_reason()
            if reason is not None:
                break
            self._one_step()
        return self._finish(reason)

    def _stop_reason(self) -> str | None:
        """Why the run stops before the next step (None: it goes on); refreshes the clock."""
        self.train_seconds = self.clock.train_seconds(time.perf_counter())
        local_reason = None
        if self.max_steps is not None and self.step >= self.max_steps:
            local_reason = "max_steps"
        elif self.max_minutes is not None and self.train_seconds >= self.max_minutes * 60:
            local_reason = "max_minutes"
        elif self.stop.raised:
            local_reason = "signal"
        want_stop = local_reason is not None
        if self.d.enabled:
            want_stop, self.train_seconds = distributed.agree_stop(want_stop, self.train_seconds,
                                                                   self.device)
        if want_stop:
            return local_reason or "stop requested by another rank"
        return None

    def _one_step(self) -> None:
        cfg, step, device = self.cfg, self.step, self.device
        # every step's randomness (quantisation noise) is a pure function of (seed, rank, step):
        # a resumed run repeats exactly what an uninterrupted one would have done
        torch.manual_seed((self.seed * 1_000_003 + self.d.rank * 7919 + step) % 2**63)
        if self.schedule.update(step, self.train_seconds / 60):
            self.log(f"lr -> {self.schedule.lr:.3g} at step {step}")

        if self.variable:
            lam = sample_lmbda(self.lo, self.hi, self.seed, step,
                               self.batch_size if cfg["per_sample_lmbda"] else None,
                               str(cfg["lmbda_sampling"]), float(cfg["lmbda_power"]))
        else:
            lam = self.lo
        x, caps = next(self.batches)
        x = x.to(device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        idx = torch.tensor([self.cap_index[c] for c in caps])
        text = self.text_bank[idx].to(device, non_blocking=True) if self.text_bank is not None else None
        temb = self.clip_text[idx].to(device) if self.clip_text is not None else None
        lam_arg: float | Tensor = lam.to(device) if isinstance(lam, Tensor) else lam

        k_p_scale = lpips_weight_scale(lam_arg, step, int(cfg["k_P_ramp_steps"] or 0),
                                       cfg["k_P_lmbda_ref"]) if self.k_p > 0 else 1.0
        losses, aux, gnorm, ok = train_step(
            self.fwd, self.criterion, self.optimizer, self.aux_optimizer, self.main_params,
            self.aux_params, x, text, lam_arg, self.variable, temb, float(cfg["clip_grad"]),
            k_p_scale)
        self.step += 1
        if not ok:
            self.bad_steps += 1
            self.log(f"warning: non-finite gradient at step {step} "
                     f"(loss {float(losses['loss'].detach()):.4g}); "
                     f"step skipped ({self.bad_steps} in a row)")
            if self.bad_steps >= int(cfg["max_bad_steps"]):
                raise RuntimeError(f"{self.bad_steps} non-finite steps in a row: diverged")
            return
        self.bad_steps = 0
        now = time.perf_counter()
        self._log_step(now, lam, losses, aux, gnorm)
        self.train_seconds = self.clock.train_seconds(now)
        self._maybe_save(now)
        if self._eval_due():
            self._evaluate_in_full_precision()

    def _log_step(self, now: float, lam: float | Tensor, losses: dict[str, Tensor], aux: Tensor,
                  gnorm: Tensor) -> None:
        step = self.step
        if not (self.d.main and (step % int(self.cfg["log_every"]) == 0 or step == 1 or
                                 (self.max_steps is not None and step >= self.max_steps))):
            return
        sps = (now - self.clock.last_log) / max(1, step - self.clock.last_log_step)
        self.clock.last_log, self.clock.last_log_step = now, step
        vals = {k: float(v.detach()) for k, v in losses.items()}
        row = {
            "step": step, "lmbda": float(lam.mean()) if isinstance(lam, Tensor) else lam,
            "loss": vals["loss"], "bpp": vals["bpp"], "mse": vals["mse"],
            "psnr": psnr_from_mse(vals["mse"]), "lpips": vals.get("lpips"),
            "joint": vals.get("joint"),
            "aux": float(aux.detach()), "grad_norm": float(gnorm), "lr": self.schedule.lr,
            "s_per_step": sps, "wall_s": self.clock.base_seconds + now - self.clock.start,
        }
        self.log.csv("log.csv", row, LOG_FIELDS)
        self.log(f"step {step}: λ {row['lmbda']:.4g} loss {row['loss']:.4f} bpp {row['bpp']:.4f} "
                 f"psnr {row['psnr']:.2f}"
                 + (f" lpips {row['lpips']:.4f}" if row["lpips"] is not None else "")
                 + (f" joint {row['joint']:.4f}" if row["joint"] is not None else "")
                 + f" aux {row['aux']:.1f} |g| {row['grad_norm']:.3g} {sps:.3f} s/step")

    def _maybe_save(self, now: float) -> None:
        cfg = self.cfg
        every_steps, every_minutes = cfg["save_every_steps"], cfg["save_every_minutes"]
        if self.d.main and (
            (every_steps and self.step % int(every_steps) == 0)
            or (every_minutes and now - self.clock.last_save >= 60 * float(every_minutes))
        ):
            self.save()
            self.clock.last_save = time.perf_counter()

    def _eval_due(self) -> bool:
        every = self.cfg["eval_every_steps"]
        return bool(every and self.step % int(every) == 0)

    def _finish(self, reason: str) -> dict[str, Any]:
        d, step = self.d, self.step
        self.log(f"stopping at step {step} ({reason}); {self.train_seconds / 60:.1f} min of "
                 "training in total")
        self.save(final=True)
        if self.cfg["eval_at_end"] and not self._eval_due():
            self._evaluate_in_full_precision(restore=False)
        summary = {"step": step, "reason": reason, "train_seconds": self.train_seconds,
                   "out": str(self.out)}
        if d.enabled:
            sums = distributed.gather_checksums(self.model, d)
            if d.main:
                check = {"world": d.world, "checksums": sums, "agree": len(set(sums)) == 1,
                         "step": step}
                (self.out / "ddp_check.json").write_text(json.dumps(check, indent=2) + "\n",
                                                         encoding="utf-8")
                self.log(f"ddp: weights agree across ranks: {check['agree']}")
                summary["ddp_agree"] = check["agree"]
        return summary
