"""Distillation of teacher traces into the society transformer (docs/design.md §7), with Lightning.

Each training sample is an episode (one trace file: all ticks of one world × scenario × seed).
The student unrolls over the ticks from its initial state. What each agent observably did last
tick -- its drawn decision and stance -- is fed back (the teacher's here, its own samples in a
rollout), and neighbours hear the teacher's messages and stances (`own_message_rate` mixes in
the student's own). For the first `teacher_forcing_epochs` epochs the previous decision
distribution and channels are the teacher's too; afterwards the student's own, so its errors
do not compound. The per-agent stochastic latent comes from its posterior given the teacher's
trajectory (a conditional VAE; `LatentPosterior`). Backpropagation is truncated every `bptt`
ticks (manual optimisation). Invalid teacher records are masked out of every loss.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lsm.config import ConfigError, Problem
from lsm.model.checkpoint import UNRECORDED_EVENT_FEATURES, load_checkpoint
from lsm.model.society import LatentPosterior, SocietyModel, StudentConfig, TickOutputs, with_drawn
from lsm.society import seeds
from lsm.society.scenario import EVENT_FEATURES
from lsm.society.world.population import IdentityVocab
from lsm.train.data import Episode


@dataclasses.dataclass
class LossWeights:
    decision: float = 1.0
    channels: float = 1.0
    expression: float = 0.5
    reasoning: float = 0.5
    salience: float = 0.2
    stance: float = 10.0
    """≈ a Gaussian log-likelihood with the planted stance noise (MSE / 2σ², σ ≈ 0.2): stance is what neighbours hear."""
    expression_code: float = 0.5
    latent_kl: float = 0.5
    """KL of the stochastic latents' posterior to their N(0, 1) prior (nats per agent)."""


def student_config(student: StudentConfig | dict[str, Any] | None = None) -> StudentConfig:
    """A (fresh) `StudentConfig` from a config, its fields as a dict (a module's hparams) or None
    (the defaults)."""
    if student is None:
        return StudentConfig()
    if isinstance(student, StudentConfig):
        student = dataclasses.asdict(student)
    return StudentConfig(**{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in student.items()})


RENAMED_STUDENT_KEYS = {"graph_attention": "graph"}
"""Flat `DistillModule` arguments of before the student's fields moved under `student`, renamed there."""


def moved_student_keys(keys: Any) -> dict[str, str]:
    """Which of `keys` (a training config's `model:` keys, or `--model.X` flags) are the student's
    fields written flat, as before they moved under `model.student`: {old key: its new name}."""
    names = {f.name for f in dataclasses.fields(StudentConfig)}
    return {k: RENAMED_STUDENT_KEYS.get(k, k) for k in keys if k in names or k in RENAMED_STUDENT_KEYS}


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's `hyper_parameters` in today's form: one written before the student's fields
    moved under `student` (flat `dim`, `graph_attention`, ...) gets them moved there, so `lsm
    train fit --ckpt_path OLD.ckpt` resumes it; anything else is returned as it is."""
    moved = moved_student_keys(hparams)
    if not moved or "student" in hparams:
        return hparams
    out = {k: v for k, v in hparams.items() if k not in moved}
    out["student"] = {new: hparams[old] for old, new in moved.items() if hparams[old] is not None}  # categorical_sizes: None if unbuilt
    return out


def resumable_hparams(hparams: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """`upgrade_hparams`, and the refusal (`ConfigError`, one paragraph) of resuming a student
    trained on other numeric event features than the code's `EVENT_FEATURES`."""
    out = upgrade_hparams(hparams)
    student = out.get("student")
    have = student.get("event_features", list(UNRECORDED_EVENT_FEATURES)) if isinstance(student, dict) else None
    if have is not None and have != list(EVENT_FEATURES):
        raise ConfigError(path, [Problem("model.student.event_features", have, f"{', '.join(EVENT_FEATURES)}, the numeric event "
                                         "features of this version of lsm (EVENT_FEATURES in society/scenario.py): a "
                                         "student trained on others cannot resume here; train a new one")],
                          kind="checkpoint to resume")
    return out


def refuse_flat_student_keys(config: Any = None, source: str = "", args: list[str] | None = None) -> None:
    """One paragraph (`ConfigError`, exit status 2) instead of jsonargparse's "does not accept
    option" when a training config or a flag still gives a student field directly under `model`
    (`model: {dim: 64}`, `--model.dim 64`)."""
    model = config.get("model") if isinstance(config, dict) else None
    moved = moved_student_keys(model) if isinstance(model, dict) else {}
    if moved:
        raise ConfigError(source, [Problem(f"model.{k}", model[k], f"it under model.student, as `{v}` (the student's fields "
                                           "moved there: model: student: {dim: ..., heads: ...})") for k, v in moved.items()],
                          kind="training config")
    args = list(args or [])
    flags = {}  # old key -> its value as given
    for i, a in enumerate(args):
        if a.startswith("--model."):
            key, eq, value = a.removeprefix("--model.").partition("=")
            flags[key] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    moved = moved_student_keys(flags)
    if moved:
        raise ConfigError("(command line)", [Problem(f"--model.{k}", flags[k], f"--model.student.{v} (the student's fields "
                                                     "moved under model.student)") for k, v in moved.items()],
                          kind="lsm train option")


def tick_losses(out: TickOutputs, targets: dict[str, Tensor], t: int, channel_levels: bool = True) -> dict[str, Tensor]:
    """Per-term losses of one tick over the valid agents (zeros when none is valid).

    Channels: KL from the teacher's 11-level distribution (summed over channels, in nats like the
    decision term) when the trace stores it, else the squared error of the means."""
    v = targets["valid"][t]
    if not v.any():
        zero = out.channels.sum() * 0
        return {k: zero for k in ("decision", "channels", "expression", "reasoning", "salience", "stance")}
    logp = torch.log_softmax(out.decision_logits[v], -1)
    p = targets["decision_dist"][t][v]
    if channel_levels and "channel_dist" in targets:
        q = targets["channel_dist"][t][v]  # (V, C, L)
        q = q / q.sum(-1, keepdim=True).clamp_min(1e-8)
        logq = torch.log_softmax(out.channel_logits[v], -1)
        channels = (q * (torch.log(q.clamp_min(1e-8)) - logq)).sum((-1, -2)).mean()
    else:
        channels = F.mse_loss(out.channels[v], targets["channels"][t][v])
    assert out.expression_text is not None and out.reasoning_text is not None, "training needs SocietyModel.decode_text"
    return {
        "decision": F.kl_div(logp, p, reduction="batchmean"),  # KL(teacher || student); CE for one-hot targets
        "channels": channels,
        "expression": (1 - F.cosine_similarity(out.expression_text[v], targets["expression_emb"][t][v], dim=-1)).mean(),
        "reasoning": (1 - F.cosine_similarity(out.reasoning_text[v], targets["reasoning_emb"][t][v], dim=-1)).mean(),
        "salience": F.mse_loss(out.salience[v], targets["salience"][t][v]),
        "stance": F.mse_loss(out.stance[v], targets["stance"][t][v]),
    }


def drawn_decisions(targets: dict[str, Tensor], t: int) -> Tensor:
    """(N,) the teacher's drawn decision at tick t, -1 where the agent-tick is invalid."""
    return torch.where(targets["valid"][t], targets["decision"][t].long(), torch.full_like(targets["decision"][t].long(), -1))


def posterior_features(ep: Episode) -> Tensor:
    """(T, N, F) what the teacher observably did at each tick, for the latents' posterior."""
    tg = ep.targets
    d = tg["decision"].long().clamp(0, ep.action_emb.shape[0] - 1)  # (T, N)
    drawn_emb = ep.action_emb[d] * tg["valid"][..., None]  # (T, N, T)
    return LatentPosterior.features(tg["stance"], tg["salience"], tg["channels"], tg["reasoning_emb"], drawn_emb)


class DistillModule(L.LightningModule):
    """Student + distillation losses.

    Args:
        student: the student network (`StudentConfig`, the one definition of its size and switches:
            `dim`, `heads`, `layers`, ..., `graph: false` for the identity-only baseline,
            `agent_noise`, `expression_noise`, ...); its `categorical_sizes`, `numeric_dim` and
            `channels` are filled from the data module when left unset. In a preset: `model:
            student: {dim: 64, ...}`; on the command line `--model.student.dim 64`.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        bptt: ticks per truncated-backpropagation window.
        teacher_forcing_epochs: epochs with the teacher's previous decision and channels.
        grad_clip: gradient-norm clip.
        loss_weights: weight of each loss term (`LossWeights` fields; others keep their default).
        seed: seed of the model's initialisation.
        own_message_rate: scheduled sampling of what neighbours hear: each sender's broadcast is
            the teacher's message and stance, replaced by the student's own with a probability
            rising linearly from 0 (after the teacher-forcing epochs) to this rate at the last epoch.
            Default 0: a student's own broadcast is a noisy copy of the teacher's stance, and a
            regression on noisy inputs shrinks their coefficient (planted society, 2,000 agents:
            rate 0.5 gave an influence slope of 0.64 and 0.87 of the messages-removed effect,
            rate 0 gave 0.76 and 0.96).
        cosine_lr: anneal the learning rate to a tenth over the epochs (cosine).
        channel_levels: train channels on the stored 11-level distributions (False: squared error of the means).
        kl_warmup: fraction of the epochs over which the latents' KL weight rises from 0 to its
            value (a KL annealing that keeps the posterior from collapsing before the decoder uses it).
    """

    def __init__(self, student: StudentConfig | None = None, lr: float = 3e-3, weight_decay: float = 0.01, bptt: int = 4,
                 teacher_forcing_epochs: int = 2, grad_clip: float = 1.0, loss_weights: dict[str, float] | None = None,
                 seed: int = 0, own_message_rate: float = 0.0, cosine_lr: bool = True, kl_warmup: float = 0.5,
                 channel_levels: bool = True):
        super().__init__()
        cfg = student_config(student)
        student = dataclasses.asdict(cfg)  # noqa: F841 -- saved as plain data: a checkpoint's hparams load with weights_only=True
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.loss_weights = LossWeights(**(loss_weights or {}))
        self.model: SocietyModel | None = None
        self._prior_stats: list = [0, 0.0, 0.0]  # count, Σz, Σzzᵀ of this epoch's posterior samples
        if cfg.categorical_sizes or cfg.numeric_dim:  # sizes known (a trained module's hparams): build now
            self.build(cfg.categorical_sizes, cfg.numeric_dim, cfg.channels)

    def student_config(self) -> StudentConfig:
        return student_config(self.hparams.student)

    def build(self, categorical_sizes: list[int], numeric_dim: int, channels: int) -> None:
        """Create the network once the identity vocabulary is known (from the data module)."""
        self.hparams.student.update(categorical_sizes=list(categorical_sizes), numeric_dim=numeric_dim, channels=channels)
        torch.manual_seed(self.hparams.seed)
        self.model = SocietyModel(self.student_config())

    def configure_model(self) -> None:
        if self.model is None:
            dm = self.trainer.datamodule
            self.build(dm.categorical_sizes, dm.numeric_dim, dm.channels)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def on_train_epoch_start(self) -> None:
        self._prior_stats = [0, 0.0, 0.0]
        if self.hparams.cosine_lr and self.trainer.max_epochs:
            frac = self.current_epoch / max(self.trainer.max_epochs - 1, 1)
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = self.hparams.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def on_train_epoch_end(self) -> None:
        """Refit the prior rollouts draw agent latents from to this epoch's posterior samples."""
        if self.model is not None and self._prior_stats[0]:
            self.model.fit_prior(float(self._prior_stats[0]), self._prior_stats[1], self._prior_stats[2])

    def kl_scale(self) -> float:
        """This epoch's multiplier of the latents' KL weight (KL annealing)."""
        epochs = (self.trainer.max_epochs if self._trainer is not None else None) or 1
        ramp = self.hparams.kl_warmup * epochs
        return 1.0 if ramp <= 0 else min(1.0, (self.current_epoch + 1) / ramp)

    def own_rate(self) -> float:
        """This epoch's probability that a sender is heard with its own (student) broadcast."""
        h, epochs = self.hparams, (self.trainer.max_epochs if self._trainer is not None else None) or 1
        free = max(epochs - h.teacher_forcing_epochs, 1)
        return h.own_message_rate * min(max(self.current_epoch - h.teacher_forcing_epochs + 1, 0) / free, 1.0)

    # -- unrolling -----------------------------------------------------------------------
    def unroll(self, ep: Episode, teacher_forcing: bool, step_fn=None, own_rate: float = 0.0,
               generator: torch.Generator | None = None, kl_scale: float = 1.0) -> dict[str, Tensor]:
        """Run all ticks; `step_fn(loss)` is called at every BPTT boundary (training).

        What an agent did last tick is observed, as in a rollout: the teacher's drawn decision
        and stance are fed back into the state. Neighbours hear the teacher's messages and
        stances, each sender replaced by the student's own broadcast with probability `own_rate`.
        With `teacher_forcing` the previous decision distribution and channels are the teacher's too.
        The stochastic latents come from their posterior given the teacher's answers."""
        assert self.model is not None
        m, tg, T = self.model, ep.targets, ep.ticks
        state = m.initial_state(ep.n, ep.action_emb.shape[0], device=self.device)
        feats = posterior_features(ep) if m.posterior is not None else None  # (T, N, F)
        agent_eps = torch.randn(ep.n, m.cfg.agent_noise, generator=generator) if m.cfg.agent_noise else None
        totals: dict[str, Tensor] = {}
        window: list[Tensor] = []
        agent_kl = None
        identity = m.identity(ep.inputs(0)) if m.posterior is not None else None  # (N, D), for the posterior
        for t in range(T):
            if m.cfg.agent_noise and not window:  # once per BPTT window: the same draw, a fresh graph
                if t > 0:
                    identity = m.identity(ep.inputs(0))  # a fresh graph for this window
                state.agent_noise, agent_kl = m.posterior.agent(feats, tg["valid"], identity, eps=agent_eps)  # (N, Ra), (N,)
                if t == 0 and self.training:  # the aggregate posterior, for the prior rollouts draw from
                    z = state.agent_noise.detach()[tg["valid"].any(0)]
                    self._prior_stats[0] += len(z)
                    self._prior_stats[1] = self._prior_stats[1] + z.sum(0)
                    self._prior_stats[2] = self._prior_stats[2] + z.T @ z
            if t > 0:
                v = tg["valid"][t - 1]
                state = with_drawn(state, drawn_decisions(tg, t - 1), ep.action_emb.shape[0])
                heard = v if own_rate <= 0 else v & (torch.rand(ep.n, generator=generator) >= own_rate)
                state.expression = torch.where(heard[:, None], m.encode_expression(tg["expression_emb"][t - 1]), state.expression)
                state.stance = torch.where(heard, tg["stance"][t - 1], state.stance)
                if teacher_forcing:
                    state.channels = torch.where(v[:, None], tg["channels"][t - 1], state.channels)
                    state.decision_logits = torch.where(v[:, None], torch.log(tg["decision_dist"][t - 1].clamp_min(1e-6)), state.decision_logits)
            inp = ep.inputs(t)
            kl = torch.zeros(ep.n)
            if m.cfg.tick_noise:
                inp.tick_noise, kl = m.posterior.tick(feats[t], m.identity(inp), generator)
            if agent_kl is not None:
                kl = kl + agent_kl / T
            state, out = m(inp, state)
            parts = tick_losses(out, tg, t, self.hparams.channel_levels)
            parts["expression_code"] = self.expression_code_loss(state.expression, tg, t)
            v = tg["valid"][t]
            parts["latent_kl"] = kl[v].mean() if v.any() else kl.sum() * 0
            loss = sum(getattr(self.loss_weights, k) * v * (kl_scale if k == "latent_kl" else 1.0) for k, v in parts.items())
            window.append(loss)
            for k, val in parts.items():
                totals[k] = totals.get(k, 0) + val.detach() / T
            if step_fn is not None and (len(window) == self.hparams.bptt or t == T - 1):
                step_fn(torch.stack(window).mean())
                window = []
                state = state.detach()
        totals["loss"] = sum(getattr(self.loss_weights, k) * totals[k] for k in list(totals))
        return totals

    def expression_code_loss(self, expression: Tensor, targets: dict[str, Tensor], t: int) -> Tensor:
        """Ties the message encoder used for teacher forcing to the student's own broadcasts:
        the encoded teacher message must decode back to it, and the student's expression must
        match the encoding of what the teacher said (so forced and free-running messages share a space)."""
        v = targets["valid"][t]
        if not v.any():
            return expression.sum() * 0
        emb = targets["expression_emb"][t][v]
        code = self.model.encode_expression(emb)  # (V, X)
        recon = 1 - F.cosine_similarity(self.model.head_expression_text(code), emb, dim=-1).mean()
        return recon + F.mse_loss(expression[v], code.detach())

    def training_step(self, batch: list[Episode], batch_idx: int) -> None:
        opt = self.optimizers()
        tf = self.current_epoch < self.hparams.teacher_forcing_epochs

        def step(loss: Tensor) -> None:
            opt.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
            opt.step()

        g = seeds.torch_generator(self.hparams.seed, seeds.Stream.TRAIN_NOISE, self.global_step)
        for ep in batch:
            totals = self.unroll(ep, tf, step, own_rate=self.own_rate(), generator=g, kl_scale=self.kl_scale())
            self.log_dict({f"train/{k}": v for k, v in totals.items()}, batch_size=1, prog_bar=False)
        self.log("train_loss", totals["loss"], prog_bar=True, batch_size=1)

    def validation_step(self, batch: list[Episode], batch_idx: int) -> None:
        for ep in batch:
            g = seeds.torch_generator(self.hparams.seed, seeds.Stream.VALIDATION_NOISE, batch_idx)
            totals = self.unroll(ep, teacher_forcing=False, generator=g)
            self.log_dict({f"val/{k}": v for k, v in totals.items()}, batch_size=1)
            self.log("val_loss", totals["loss"], prog_bar=True, batch_size=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Everything a rollout needs without the training data: the network's config, the
        identity vocabulary (to encode unseen worlds by category name) and the files it saw."""
        checkpoint["student_config"] = dataclasses.asdict(self.student_config())
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "vocab"):
            checkpoint["identity_vocab"] = json.dumps(dm.vocab.to_dict())
            checkpoint["train_paths"] = list(dm.train_paths)
            checkpoint["val_paths"] = list(dm.val_paths)
            if getattr(dm, "neighbor_rule", None) is not None:  # who heard whom in the training traces
                checkpoint["neighbor_rule"] = json.dumps(dataclasses.asdict(dm.neighbor_rule))


def load_student(path: str | Path) -> tuple[SocietyModel, StudentConfig]:
    """A trained student from a Lightning checkpoint, read with `weights_only=True`."""
    s = load_checkpoint(path)
    return s.model, s.config
