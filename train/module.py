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
from lsm.model.society import LatentPosterior, SocietyModel, StudentConfig, TickInputs, TickOutputs
from lsm.model.state import AgentState
from lsm.model.tick import advance, contrast_rows, trace_senders
from lsm.society import seeds
from lsm.society.contrasts import CONTRASTS
from lsm.society.scenario import EVENT_FEATURES
from lsm.train.data import AgentBatch, Episode
from lsm.train.replay import trace_inputs


@dataclasses.dataclass
class LossWeights:
    decision: float = 1.0
    channels: float = 1.0
    expression: float = 0.5
    reasoning: float = 0.5
    salience: float = 0.2
    stance: float = 10.0
    """≈ a Gaussian log-likelihood with the planted stance noise (MSE / 2σ², σ ≈ 0.2): stance is what neighbours hear
    (with `stance_noise`, the term is a tenth of the NLL of the predicted mean and sd: `stance_loss`)."""
    expression_code: float = 0.5
    latent_kl: float = 0.5
    """KL of the stochastic latents' posterior to their N(0, 1) prior (nats per agent)."""
    contrast: float = 10.0
    """The paired loss (`contrast_loss`): squared error of the student's change of its decision
    distribution under each paired contrast against the teacher's, summed over actions (traces
    that store `contrast_dist`; others give it 0)."""


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
        "stance": stance_loss(out, targets["stance"][t], v),
    }


def stance_loss(out: TickOutputs, stance: Tensor, v: Tensor) -> Tensor:
    """The squared error of the predicted stance; with a predicted sd (`stance_noise`), a tenth of
    its Gaussian negative log-likelihood (so `LossWeights.stance`, set for the squared error,
    weighs the mean about as before: 10 · NLL / 10 has gradient (x − μ)/σ², ≈ 25 (x − μ) at σ = 0.2)."""
    mean = out.stance_mean if out.stance_mean is not None else out.stance
    if out.stance_sd is None:
        return F.mse_loss(mean[v], stance[v])
    sd = out.stance_sd[v]
    return 0.1 * (0.5 * ((stance[v] - mean[v]) / sd) ** 2 + torch.log(sd)).mean()


def posterior_features(ep: Episode, targets: dict[str, Tensor] | None = None) -> Tensor:
    """(T, N, F) what the teacher observably did at each tick, for the latents' posterior
    (`targets`: the episode's, or those of a batch of its agents)."""
    tg = ep.targets if targets is None else targets
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
        self._channel_stats: list = [0.0, 0.0]  # Σ squared within-agent channel residuals, their degrees of freedom (C,)
        self._channel_residuals: list[Tensor] = []  # this unroll's (N, C) residuals, per tick
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
        self._channel_stats = [0.0, 0.0]

    def progress(self) -> float:
        """How far training is, 0..1: optimiser steps of the step budget (`Trainer(max_steps)`),
        else epochs of `max_epochs` (what the learning rate, KL and own-message schedules follow)."""
        tr = self._trainer
        if tr is None:
            return 1.0
        if tr.max_steps and tr.max_steps > 0:
            return min(self.global_step / tr.max_steps, 1.0)
        return min(self.current_epoch / max((tr.max_epochs or 1) - 1, 1), 1.0)

    def set_lr(self) -> None:
        """Anneal the learning rate to a tenth over training (cosine), when `cosine_lr`."""
        if not self.hparams.cosine_lr or self._trainer is None:
            return
        frac = self.progress()
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.hparams.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def on_train_epoch_end(self) -> None:
        self.fit_buffers()

    def on_validation_epoch_start(self) -> None:
        """Refit before validating: under a step budget the checkpoint kept is one written after a
        validation, possibly mid-epoch."""
        if self.trainer.training or self.trainer.state.fn == "fit":
            self.fit_buffers()

    def fit_buffers(self) -> None:
        """Refit what rollouts draw from to this epoch's training batches so far: the prior of the
        agent latents (their posterior samples) and the per-tick channel noise (the within-agent
        channel residuals)."""
        if self.model is not None and self._prior_stats[0]:
            self.model.fit_prior(float(self._prior_stats[0]), self._prior_stats[1], self._prior_stats[2])
        if self.model is not None and isinstance(self._channel_stats[1], Tensor) and bool((self._channel_stats[1] > 0).all()):
            self.model.fit_channel_noise((self._channel_stats[0] / self._channel_stats[1]).sqrt())

    def kl_scale(self) -> float:
        """This step's multiplier of the latents' KL weight (KL annealing over the first
        `kl_warmup` of training)."""
        tr = self._trainer
        if tr is None or self.hparams.kl_warmup <= 0:
            return 1.0
        if tr.max_steps and tr.max_steps > 0:
            return min(1.0, (self.global_step + 1) / (self.hparams.kl_warmup * tr.max_steps))
        return min(1.0, (self.current_epoch + 1) / (self.hparams.kl_warmup * (tr.max_epochs or 1)))

    def own_rate(self) -> float:
        """This epoch's probability that a sender is heard with its own (student) broadcast."""
        h, epochs = self.hparams, (self.trainer.max_epochs if self._trainer is not None else None) or 1
        free = max(epochs - h.teacher_forcing_epochs, 1)
        return h.own_message_rate * min(max(self.current_epoch - h.teacher_forcing_epochs + 1, 0) / free, 1.0)

    # -- unrolling -----------------------------------------------------------------------
    def unroll(self, ep: Episode, teacher_forcing: bool, step_fn=None, own_rate: float = 0.0,
               generator: torch.Generator | None = None, kl_scale: float = 1.0, rows: Tensor | None = None) -> dict[str, Tensor]:
        """Run all ticks (`model.tick.advance`); `step_fn(loss)` is called at every BPTT boundary (training).

        What an agent did last tick is observed, as in a rollout: the teacher's drawn decision,
        stance and message are recorded in the state (`model.tick.said`). Neighbours hear the
        teacher's messages and stances, each sender replaced by the student's own broadcast with
        probability `own_rate` (whole episodes only). With `teacher_forcing` the previous decision
        distribution and channels are the teacher's too. The stochastic latents come from their
        posterior given the teacher's answers. `rows` (B,): train on these agents only (a batch):
        they hear the teacher's broadcasts of the whole population, which is exact, since with
        `own_rate` 0 what a sender broadcasts is the teacher's whatever the student computes."""
        assert self.model is not None
        m, T = self.model, ep.ticks
        if rows is not None and own_rate > 0:
            raise ValueError("own_message_rate > 0 needs whole episodes: set the data module's max_agents to None")
        tg = ep.targets if rows is None else {k: v[:, rows] for k, v in ep.targets.items()}
        n = ep.n if rows is None else len(rows)
        state = m.initial_state(n, ep.action_emb.shape[0], device=self.device)
        feats = posterior_features(ep, tg) if m.posterior is not None else None  # (T, N, F)
        agent_eps = torch.randn(n, m.cfg.agent_noise, generator=generator) if m.cfg.agent_noise else None
        totals: dict[str, Tensor] = {}
        window: list[Tensor] = []
        agent_kl = None
        own: Tensor | None = None  # (N, X + 1) the student's own last broadcast (scheduled sampling)
        for t in range(T):
            inp = trace_inputs(m, ep, t, rows)
            if m.cfg.agent_noise and not window:  # once per BPTT window: the same draw, a fresh graph
                assert m.posterior is not None and feats is not None
                state.agent_noise, agent_kl = m.posterior.agent(feats, tg["valid"], m.identity(inp), eps=agent_eps)  # (N, Ra), (N,)
                if t == 0 and self.training:  # the aggregate posterior, for the prior rollouts draw from
                    z = state.agent_noise.detach()[tg["valid"].any(0)]
                    self._prior_stats[0] += len(z)
                    self._prior_stats[1] = self._prior_stats[1] + z.sum(0)
                    self._prior_stats[2] = self._prior_stats[2] + z.T @ z
            senders = trace_senders(m, ep.targets, t)  # (N_all, X + 1) the teacher's broadcasts of t - 1
            if own_rate > 0 and own is not None:
                heard = torch.rand(n, generator=generator) >= own_rate
                senders = torch.where(heard[:, None], senders, own)
            kl = torch.zeros(n)
            if m.cfg.tick_noise:
                assert m.posterior is not None and feats is not None
                inp.tick_noise, kl = m.posterior.tick(feats[t], m.identity(inp), generator)
            if agent_kl is not None:
                kl = kl + agent_kl / T
            prev = state
            state, out = advance(m, state, inp, senders=senders, receivers=rows, generator=generator)
            assert out.expression is not None
            own = torch.cat([out.expression, out.stance[:, None]], -1).detach()
            v = tg["valid"][t]
            if teacher_forcing:
                state.channels = torch.where(v[:, None], tg["channels"][t], state.channels)
                state.decision_logits = torch.where(v[:, None], torch.log(tg["decision_dist"][t].clamp_min(1e-6)), state.decision_logits)
            parts = tick_losses(out, tg, t, self.hparams.channel_levels)
            parts["expression_code"] = self.expression_code_loss(out.expression, tg, t)
            parts["latent_kl"] = kl[v].mean() if v.any() else kl.sum() * 0
            if "contrast_dist" in tg and self.loss_weights.contrast:
                parts["contrast"] = self.contrast_loss(prev, inp, out, tg, t, senders, rows, generator)
            if self.training and m.cfg.channel_effects:
                self._channel_residuals.append((tg["channels"][t] - out.channels).detach().where(v[:, None], torch.nan))
            loss = sum(getattr(self.loss_weights, k) * v * (kl_scale if k == "latent_kl" else 1.0) for k, v in parts.items())
            window.append(loss)
            for k, val in parts.items():
                totals[k] = totals.get(k, 0) + val.detach() / T
            if step_fn is not None and (len(window) == self.hparams.bptt or t == T - 1):
                step_fn(torch.stack(window).mean())
                window = []
                state = state.detach()
        if self._channel_residuals:
            self._channel_noise_stats(torch.stack(self._channel_residuals))
            self._channel_residuals = []
        totals["loss"] = sum(getattr(self.loss_weights, k) * totals[k] for k in list(totals))
        return totals

    def contrast_loss(self, prev: AgentState, inp: TickInputs, out: TickOutputs, tg: dict[str, Tensor], t: int,
                      senders: Tensor, rows: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """The paired loss of tick t: for the agents whose contrasts the teacher scored, the
        student is asked again from the same state with the same edit (`lsm.society.contrasts`:
        messages of all, or of one tie type, removed from its neighbour table; its events
        removed), and its change of decision distribution is compared with the teacher's:
        Σ_a (Δ_student − Δ_teacher)², averaged over (agent, contrast). Contrasts that remove
        nothing an agent perceived (both changes are 0) are skipped. Zero when none was scored."""
        q = tg["contrast_dist"][t]  # (N, X, A)
        sampled = torch.isfinite(q[:, 0, 0]) & tg["valid"][t]  # (N,)
        zero = out.decision_logits.sum() * 0
        if not sampled.any():
            return zero
        p_shown = torch.softmax(out.decision_logits, -1)  # (N, A)
        terms = []
        for x, name in enumerate(CONTRASTS[1:], start=1):
            sel, sub = contrast_rows(inp, name, sampled)
            if sub is None:
                continue
            _, o = advance(self.model, prev.index(sel), sub, senders=senders, receivers=sel if rows is None else rows[sel],
                           generator=generator)
            d_student = torch.softmax(o.decision_logits, -1) - p_shown[sel]  # (S, A)
            d_teacher = q[sel, x] - q[sel, 0]  # (S, A)
            terms.append(((d_student - d_teacher) ** 2).sum(-1))
        return torch.cat(terms).mean() if terms else zero

    def _channel_noise_stats(self, residual: Tensor) -> None:
        """Accumulate the within-agent variance of the channel residuals (T, N, C; NaN where
        invalid): the per-tick channel noise the student cannot know (`channel_tick_sd`)."""
        ok = ~residual.isnan()  # (T, N, C)
        count = ok.sum(0)  # (N, C)
        mean = residual.nan_to_num().sum(0) / count.clamp_min(1)  # (N, C)
        sq = ((residual - mean).nan_to_num() ** 2).sum(0)  # (N, C)
        keep = count >= 2
        self._channel_stats[0] = self._channel_stats[0] + (sq * keep).sum(0)  # (C,)
        self._channel_stats[1] = self._channel_stats[1] + ((count - 1) * keep).sum(0)  # (C,)

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

    def training_step(self, batch: list[AgentBatch], batch_idx: int) -> None:
        opt = self.optimizers()
        tf = self.current_epoch < self.hparams.teacher_forcing_epochs

        def step(loss: Tensor) -> None:
            self.set_lr()
            opt.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
            opt.step()

        g = seeds.torch_generator(self.hparams.seed, seeds.Stream.TRAIN_NOISE, self.global_step)
        for item in batch:
            totals = self.unroll(item.episode, tf, step, own_rate=self.own_rate(), generator=g, kl_scale=self.kl_scale(),
                                 rows=item.rows)
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
