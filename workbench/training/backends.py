"""Backends: how :func:`workbench.train` runs one optimizer step — plain torch, torch DDP, DeepSpeed.

The loop owns *what* is trained (data order, schedule, budget, logging); a backend owns *how* the
gradients of one step are made and applied. Three are here:

``torch`` in one process
    autocast (bf16/fp16 where asked), ``GradScaler`` for fp16, gradient clipping, the optimizer.
``torch`` under ``torchrun`` (``WORLD_SIZE > 1`` in the environment): DDP
    ``init_process_group`` (gloo on CPU, nccl on GPU), the model wrapped in
    ``DistributedDataParallel``; micro-batches before the last of a step run under ``no_sync()`` so
    gradients are all-reduced once per optimizer step. Each rank trains on its slice of every
    global micro-batch, drawn from the one shared sampler stream (see the loop).
``deepspeed``
    a real ``deepspeed.initialize`` engine: bf16 / fp16, ZeRO stage 0-2 and gradient accumulation
    from the loop's parameters (micro-batch per GPU, accumulation steps, clipping), DeepSpeed's own
    ``engine.backward`` / ``engine.step``. It runs on DeepSpeed's CPU accelerator too (gloo), which
    is what the tests use; launch it with ``deepspeed`` or ``torchrun`` for several GPUs or nodes.

Both DDP and DeepSpeed wrap a :class:`TaskLoss` module (model + task, whose forward is the task's
training loss) so that the sparse MLM head, which calls the encoder and the head separately, still
goes through the wrapper's ``forward`` (DDP's gradient hooks need it).

What the loop calls (duck-typed): ``accumulate(last)`` (context for one micro-batch),
``autocast()``, ``loss(batch)``, ``backward(loss)``, ``step(grad_clip)``, ``discard()``,
``loss_scale_collapsed()``, ``param_groups``, ``reduce_sum(values)`` / ``agree(values)`` /
``share(obj)`` (rank 0's values everywhere), ``checkpoint_optimizer`` / ``extra_state()`` / ``load_extra_state()`` /
``save_engine()`` / ``load_engine()``, ``barrier()``, ``finish()``.
"""
from __future__ import annotations

import contextlib
import os
import socket

import torch

from ..errors import ConfigError

BACKENDS = ("torch", "deepspeed")


def dist_env() -> dict | None:
    """``{"rank", "local_rank", "world_size"}`` under a multi-process launcher (torchrun, deepspeed), else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world <= 1:
        return None
    return {"rank": int(os.environ.get("RANK", "0")), "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "world_size": world}


def local_rank() -> int:
    env = dist_env()
    return env["local_rank"] if env else 0


def shutdown() -> None:
    """Destroy the default process group (call once at the end of a torchrun script)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device, precision: str):
    """The autocast context of ``precision`` (fp32: disabled) on ``device``'s type."""
    if precision == "fp32":
        return torch.autocast(device_type=torch.device(device).type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class TaskLoss(torch.nn.Module):
    """``model`` + ``task`` as one module whose ``forward(batch)`` is ``task.loss(model, batch)``."""

    def __init__(self, model, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch):
        return self.task.loss(self.model, batch)


class _Collectives:
    """Scalar collectives over the default process group (no-ops in one process)."""

    world_size = 1
    rank = 0
    device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _tensor(self, values):
        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)

    def reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks."""
        if self.world_size == 1:
            return list(values)
        import torch.distributed as dist
        t = self._tensor(values)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, values):
        """Rank 0's ``values`` (a float or a list of floats) on every rank: time-based decisions
        (LR, deadline, markers, early stop) must be the same on all ranks or they deadlock."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist
        scalar = not isinstance(values, (list, tuple))
        t = self._tensor([values] if scalar else values)
        dist.broadcast(t, src=0)
        out = t.tolist()
        return out[0] if scalar else out

    def share(self, obj):
        """Rank 0's (picklable) ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist
            dist.barrier()


class TorchBackend(_Collectives):
    """Plain torch: one process, or DDP when launched by torchrun (see the module doc)."""

    name = "torch"

    def __init__(self, model, task, optimizer, device, precision: str = "fp32", ddp_options: dict | None = None):
        self.model, self.task, self.optimizer = model, task, optimizer
        self.device, self.precision = torch.device(device), precision
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(precision == "fp16"))
        self.ddp = None
        env = dist_env()
        if env is not None:
            import torch.distributed as dist
            ids = None
            if self.device.type == "cuda":
                ids = [self.device.index if self.device.index is not None else env["local_rank"]]
                torch.cuda.set_device(ids[0])       # NCCL collectives (and broadcast_object_list) use it
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            import inspect
            sig = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
            # the models' buffers are constants (position ids): no need to re-sync them every forward
            quiet = {"forward_sync_buffers": False} if "forward_sync_buffers" in sig else {"broadcast_buffers": False}
            opts = {**quiet, **(ddp_options or {})}
            self.ddp = torch.nn.parallel.DistributedDataParallel(TaskLoss(model, task), device_ids=ids, **opts)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def checkpoint_optimizer(self):
        return self.optimizer

    def autocast(self):
        return autocast(self.device, self.precision)

    def accumulate(self, last: bool):
        """DDP: all-reduce gradients only in the last micro-batch of a step (forward and backward
        of the others run under ``no_sync``)."""
        if self.ddp is None or last:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def loss(self, batch):
        return self.task.loss(self.model, batch) if self.ddp is None else self.ddp(batch)

    def backward(self, loss) -> None:
        self.scaler.scale(loss).backward()

    def step(self, grad_clip: float | None) -> None:
        if grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def discard(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def loss_scale_collapsed(self) -> bool:
        return self.scaler.is_enabled() and self.scaler.get_scale() < 1e-4

    def extra_state(self) -> dict:
        return {"scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_extra_state(self, st: dict) -> None:
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])

    def saveable(self, model):
        return model

    def save_engine(self, ckpt_root, name: str) -> None:
        pass

    def load_engine(self, ckpt_root, name: str) -> None:
        pass

    def finish(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def deepspeed_config(batch_size: int, grad_accum: int, precision: str, grad_clip: float | None, zero_stage: int,
                     extra: dict | None = None) -> dict:
    """The DeepSpeed config the loop's parameters imply (``extra`` is merged in last, deeply)."""
    cfg = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": grad_accum,
           "gradient_clipping": float(grad_clip or 0.0), "zero_optimization": {"stage": zero_stage},
           "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return _merge(cfg, extra or {})


class DeepSpeedBackend(_Collectives):
    """A ``deepspeed.initialize`` engine around :class:`TaskLoss` (see the module doc).

    Precision is DeepSpeed's, not autocast: with bf16/fp16 the engine casts the model to 16 bits and
    keeps fp32 master weights in its optimizer; :meth:`finish` casts the model back to fp32 for
    evaluation and fine-tuning. ZeRO stage 3 (partitioned parameters) is not supported by this loop,
    which saves full weights. One process without a launcher gets a single-rank process group
    (``RANK=0``, ``WORLD_SIZE=1``, a free local port) — DeepSpeed needs one even then. The first use
    on a machine JIT-builds DeepSpeed's shared-memory CPU communication op (minutes, then cached in
    ``~/.cache/torch_extensions``).
    """

    name = "deepspeed"

    def __init__(self, model, task, optimizer, device, precision: str = "fp32", batch_size: int = 32,
                 grad_accum: int = 1, grad_clip: float | None = 1.0, zero_stage: int = 0, config: dict | None = None):
        if zero_stage not in (0, 1, 2):
            raise ConfigError(f"deepspeed zero_stage must be 0, 1 or 2 (stage 3 partitions the weights), "
                              f"got {zero_stage}")
        self.device, self.precision = torch.device(device), precision
        if self.device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if dist_env() is None:          # one process, no launcher: a single-rank group
            for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
                os.environ.setdefault(k, v)
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        import deepspeed
        from deepspeed.accelerator import get_accelerator
        acc = get_accelerator().device_name()
        if acc != self.device.type:
            raise ConfigError(f"deepspeed runs on its accelerator {acc!r}, but the device is {self.device.type!r}")
        if precision == "fp16" and not get_accelerator().is_fp16_supported():
            raise ConfigError(f"fp16 is not supported by DeepSpeed on this {acc} (use bf16 or fp32)")
        deepspeed.init_distributed(verbose=False)
        import torch.distributed as dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.model, self.task, self.base_optimizer = model, task, optimizer
        self.config = deepspeed_config(batch_size, grad_accum, precision, grad_clip, zero_stage, config)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=TaskLoss(model, task), optimizer=optimizer,
                                                                 config=self.config)
        for g in self.optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def checkpoint_optimizer(self):
        return None                      # the engine saves its (possibly partitioned) optimizer itself

    def autocast(self):
        return contextlib.nullcontext()  # the engine holds the model in its training precision

    def accumulate(self, last: bool):
        # the loop decides where a step ends (the batch ramp varies it): tell the engine
        self.engine.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def loss(self, batch):
        return self.engine(batch)

    def backward(self, loss) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)   # the loop already divided by its micro-batch count

    def step(self, grad_clip: float | None) -> None:
        self.engine.step()                # clipping is in the config (gradient_clipping)

    def discard(self) -> None:
        self.engine.optimizer.zero_grad()

    def loss_scale_collapsed(self) -> bool:
        if self.precision != "fp16":
            return False
        s = getattr(self.optimizer, "cur_scale", None) or getattr(self.optimizer, "loss_scale", None)
        return s is not None and float(s) < 1e-4

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, st: dict) -> None:
        pass

    def saveable(self, model):
        """ZeRO flattens the 16-bit weights into one buffer (the parameters are views of it), which
        safetensors refuses to save: hand it a snapshot of contiguous copies (ties kept)."""
        return _Snapshot(model)

    def save_engine(self, ckpt_root, name: str) -> None:
        """Every rank writes its part of the engine state (optimizer partitions) under ``deepspeed/``."""
        root = ckpt_root / "deepspeed"
        self.engine.save_checkpoint(str(root), tag=name, save_latest=False)
        if self.is_main:                  # drop engine states whose checkpoint the loop has pruned
            import shutil
            for d in root.iterdir():
                if d.is_dir() and d.name != name and not (ckpt_root / d.name).is_dir():
                    shutil.rmtree(d, ignore_errors=True)

    def load_engine(self, ckpt_root, name: str) -> None:
        path = ckpt_root / "deepspeed"
        if not (path / name).is_dir():
            raise ConfigError(f"no DeepSpeed engine state {path / name} to resume from")
        self.engine.load_checkpoint(str(path), tag=name, load_optimizer_states=True, load_lr_scheduler_states=False)

    def finish(self) -> None:
        if self.precision != "fp32":
            self.model.float()


class _Snapshot:
    """Duck-typed stand-in for a module in ``safetensors.torch.save_model``: contiguous copies of
    its state dict, tensors shared in the model (tied embeddings) shared in the copy."""

    def __init__(self, model):
        self.model = model

    def state_dict(self):
        copies, out = {}, {}
        for k, v in self.model.state_dict().items():
            key = (v.data_ptr(), v.dtype, tuple(v.shape))
            if key not in copies:
                copies[key] = v.detach().clone().contiguous()
            out[k] = copies[key]
        return out


def make_backend(name: str, model, task, optimizer, device, precision: str = "fp32", batch_size: int = 32,
                 grad_accum: int = 1, grad_clip: float | None = 1.0, zero_stage: int = 0, config: dict | None = None):
    """The backend ``name`` for one training run (see the module doc for what each costs)."""
    if name == "torch":
        if zero_stage:
            raise ConfigError("zero_stage applies to backend='deepspeed' only")
        return TorchBackend(model, task, optimizer, device, precision, ddp_options=config)
    if name == "deepspeed":
        return DeepSpeedBackend(model, task, optimizer, device, precision, batch_size, grad_accum, grad_clip,
                                zero_stage, config)
    raise ConfigError(f"backend {name!r} is not available (choose one of {', '.join(BACKENDS)})")
