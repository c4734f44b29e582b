"""Distillation of teacher traces into the society transformer (DESIGN §7), with Lightning.

Each training sample is an episode (one trace file: all ticks of one world × scenario × seed).
The student unrolls over the ticks from its initial state. For the first
`teacher_forcing_epochs` epochs, the previous decision and channels in the state are replaced
by the teacher's (teacher forcing); afterwards the student runs on its own states so its errors
do not compound. Backpropagation is truncated every `bptt` ticks (manual optimisation).
Invalid teacher records are masked out of every loss.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lsm.data_gen.world.population import IdentityVocab
from lsm.model.checkpoint import load_checkpoint
from lsm.model.society import SocietyModel, StudentConfig, TickOutputs
from lsm.train.data import Episode


@dataclasses.dataclass
class LossWeights:
    decision: float = 1.0
    channels: float = 1.0
    expression: float = 0.5
    reasoning: float = 0.5
    salience: float = 0.2
    stance: float = 0.2
    expression_code: float = 0.5


def tick_losses(out: TickOutputs, targets: dict[str, Tensor], t: int) -> dict[str, Tensor]:
    """Per-term losses of one tick over the valid agents (zeros when none is valid)."""
    v = targets["valid"][t]
    if not v.any():
        zero = out.channels.sum() * 0
        return {k: zero for k in ("decision", "channels", "expression", "reasoning", "salience", "stance")}
    logp = torch.log_softmax(out.decision_logits[v], -1)
    p = targets["decision_dist"][t][v]
    return {
        "decision": F.kl_div(logp, p, reduction="batchmean"),  # KL(teacher || student); CE for one-hot targets
        "channels": F.mse_loss(out.channels[v], targets["channels"][t][v]),
        "expression": (1 - F.cosine_similarity(out.expression_text[v], targets["expression_emb"][t][v], dim=-1)).mean(),
        "reasoning": (1 - F.cosine_similarity(out.reasoning_text[v], targets["reasoning_emb"][t][v], dim=-1)).mean(),
        "salience": F.mse_loss(out.salience[v], targets["salience"][t][v]),
        "stance": F.mse_loss(out.stance[v], targets["stance"][t][v]),
    }


class DistillModule(L.LightningModule):
    """Student + distillation losses.

    Args:
        dim, heads, layers, latent_dim, memory_dim, slots, slot_dim, expression_dim: the
            student's size (`StudentConfig`); identity vocabularies come from the data.
        lr, weight_decay: AdamW.
        bptt: ticks per truncated-backpropagation window.
        teacher_forcing_epochs: epochs with the teacher's previous decision and channels.
        grad_clip: gradient-norm clip.
        expression_noise: noise on the broadcast expression during training.
        loss_weights: weight of each loss term (`LossWeights` fields; others keep their default).
        seed: seed of the model's initialisation.
        graph_attention: false trains the identity-only baseline (no attention to neighbours).
        categorical_sizes, numeric_dim, channels: filled from the data module when left unset.
    """

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2, latent_dim: int = 16, memory_dim: int = 32,
                 slots: int = 8, slot_dim: int = 32, expression_dim: int = 32, lr: float = 3e-3, weight_decay: float = 0.01,
                 bptt: int = 4, teacher_forcing_epochs: int = 2, grad_clip: float = 1.0, expression_noise: float = 0.1,
                 loss_weights: dict[str, float] | None = None, seed: int = 0,
                 graph_attention: bool = True,
                 categorical_sizes: list[int] | None = None, numeric_dim: int = 0, channels: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.loss_weights = LossWeights(**(loss_weights or {}))
        self.model: SocietyModel | None = None
        if categorical_sizes is not None:
            self.build(categorical_sizes, numeric_dim, channels)

    def student_config(self) -> StudentConfig:
        h = self.hparams
        return StudentConfig(dim=h.dim, heads=h.heads, layers=h.layers, latent_dim=h.latent_dim, memory_dim=h.memory_dim,
                             slots=h.slots, slot_dim=h.slot_dim, expression_dim=h.expression_dim, channels=h.channels,
                             categorical_sizes=list(h.categorical_sizes), numeric_dim=h.numeric_dim,
                             expression_noise=h.expression_noise, graph=h.graph_attention)

    def build(self, categorical_sizes: list[int], numeric_dim: int, channels: int) -> None:
        """Create the network once the identity vocabulary is known (from the data module)."""
        self.hparams.categorical_sizes, self.hparams.numeric_dim, self.hparams.channels = list(categorical_sizes), numeric_dim, channels
        torch.manual_seed(self.hparams.seed)
        self.model = SocietyModel(self.student_config())

    def configure_model(self) -> None:
        if self.model is None:
            dm = self.trainer.datamodule
            self.build(dm.categorical_sizes, dm.numeric_dim, dm.channels)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- unrolling -----------------------------------------------------------------------
    def unroll(self, ep: Episode, teacher_forcing: bool, step_fn=None) -> dict[str, Tensor]:
        """Run all ticks; `step_fn(loss)` is called at every BPTT boundary (training)."""
        assert self.model is not None
        state = self.model.initial_state(ep.n, ep.action_emb.shape[0], device=self.device)
        totals: dict[str, Tensor] = {}
        window = []
        for t in range(ep.ticks):
            if teacher_forcing and t > 0:
                v = ep.targets["valid"][t - 1][:, None]
                state.channels = torch.where(v, ep.targets["channels"][t - 1], state.channels)
                state.decision_logits = torch.where(v, torch.log(ep.targets["decision_dist"][t - 1].clamp_min(1e-6)), state.decision_logits)
                # neighbours hear what the teacher's agents actually said last tick
                state.expression = torch.where(v, self.model.encode_expression(ep.targets["expression_emb"][t - 1]), state.expression)
            state, out = self.model(ep.inputs(t), state)
            parts = tick_losses(out, ep.targets, t)
            parts["expression_code"] = self.expression_code_loss(state.expression, ep.targets, t)
            loss = sum(getattr(self.loss_weights, k) * v for k, v in parts.items())
            window.append(loss)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0) + v.detach() / ep.ticks
            if step_fn is not None and (len(window) == self.hparams.bptt or t == ep.ticks - 1):
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

        for ep in batch:
            totals = self.unroll(ep, tf, step)
            self.log_dict({f"train/{k}": v for k, v in totals.items()}, batch_size=1, prog_bar=False)
        self.log("train_loss", totals["loss"], prog_bar=True, batch_size=1)

    def validation_step(self, batch: list[Episode], batch_idx: int) -> None:
        for ep in batch:
            totals = self.unroll(ep, teacher_forcing=False)
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


def load_student(path: str | Path) -> tuple[SocietyModel, StudentConfig]:
    """A trained student from a Lightning checkpoint, read with `weights_only=True`."""
    s = load_checkpoint(path)
    return s.model, s.config
