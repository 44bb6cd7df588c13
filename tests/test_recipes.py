"""Training recipes: device-side augmentation, schedules, label smoothing, mixed precision,
channels-last, torch.compile and peak memory; on CUDA where a GPU exists (skipped otherwise)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evonas.augment import Augment, augment, cutout, random_crop, random_flip
from evonas.batches import arrays
from evonas.builder import build
from evonas.evaluate import run_job
from evonas.genome import parse_genome
from evonas.records import Job
from evonas.train import Recipe, accuracy, make_optimizer, make_schedule, train
from tests.conftest import cli, tiny_config_yaml

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
IMAGE_GENOME = parse_genome({"layers": [
    {"id": 1, "op": "conv", "width": 8, "kernel": 3, "stride": 1, "activation": "relu",
     "batch_norm": True},
    {"id": 2, "op": "pool", "kind": "max", "size": 2},
    {"id": 3, "op": "dense", "units": 16, "activation": "relu"}]})  # fmt: skip


def images(n=240, seed=0):
    """Three classes of 1x8x8 images told apart by where a bright bar is."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, 0, 2 * label + 1, :] += 2.0
    return x, y.astype(np.int64)


def batch(shape, seed=0):
    return torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape) + seed


@pytest.mark.parametrize("shape", [(6, 2, 5, 7), (6, 3, 9)])
def test_augmentation_is_deterministic_for_a_seed(shape):
    how = Augment(crop=2, flip=True, cutout=3)
    x = batch(shape)
    first = augment(x, how, torch.Generator().manual_seed(4))
    again = augment(x, how, torch.Generator().manual_seed(4))
    other = augment(x, how, torch.Generator().manual_seed(5))
    assert first.shape == x.shape and torch.equal(first, again) and not torch.equal(first, other)


@settings(max_examples=30, deadline=None)
@given(padding=st.integers(1, 3), seed=st.integers(0, 1000), h=st.integers(2, 7),
       w=st.integers(2, 7))  # fmt: skip
def test_random_crop_is_a_shifted_window_of_the_padded_sample(padding, seed, h, w):
    x = batch((4, 2, h, w)) + 1  # no zeros inside: zeros come from the padding
    out = random_crop(x, padding, torch.Generator().manual_seed(seed))
    padded = torch.nn.functional.pad(x, [padding] * 4)
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + h, dx : dx + w] for dy in range(2 * padding + 1)
                   for dx in range(2 * padding + 1)]  # fmt: skip
        assert any(torch.equal(out[i], window) for window in windows)


def test_flip_mirrors_some_samples_and_keeps_the_rest():
    x = batch((64, 1, 3, 4))
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54  # about half


def test_cutout_zeros_one_square_per_sample():
    x = torch.ones(32, 3, 10, 10)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    for sample in out:
        holes = (sample == 0).all(dim=0)  # the same pixels in every channel
        assert ((sample == 0).any(dim=0) == holes).all()
        rows, cols = holes.any(dim=1).sum(), holes.any(dim=0).sum()
        assert 1 <= rows <= 4 and 1 <= cols <= 4 and holes.sum() == rows * cols


def test_training_with_augmentation_is_deterministic_and_learns():
    x, y = images()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build(IMAGE_GENOME, (1, 8, 8), 3)
        settings_ = {"epochs": 6, "batch_size": 32, "augment": {"flip": True, "cutout": 2}}
        train(model, arrays(x, y), settings_, 0.01, 1)
        results.append(model.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key])
    model = build(IMAGE_GENOME, (1, 8, 8), 3)
    model.load_state_dict(results[0])
    assert accuracy(model, arrays(*images(90, seed=1))) > 0.8


def lrs(schedule, warmup, epochs=4, steps=5, lr=0.1):
    recipe = Recipe(epochs=epochs, schedule=schedule, warmup_epochs=warmup)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_schedule(optimizer, recipe, steps, lr)
    values = []
    for _ in range(epochs * steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_schedules_warm_up_then_decay():
    cosine = lrs("cosine", warmup=1)
    assert cosine[:6] == sorted(cosine[:6]) and cosine[4] < 0.1  # linear rise over 5 steps
    assert cosine[5] == pytest.approx(0.1) and cosine.count(max(cosine)) == 1  # full rate once
    assert cosine[5:] == sorted(cosine[5:], reverse=True) and cosine[-1] < 0.01  # cosine to 0
    assert lrs("constant", warmup=1)[5:] == [pytest.approx(0.1)] * 15
    onecycle = lrs("onecycle", warmup=1)
    peak = onecycle.index(max(onecycle))
    assert peak in (4, 5) and max(onecycle) == pytest.approx(0.1) and onecycle[-1] < 1e-3
    plain = lrs("cosine", warmup=0)  # torch's CosineAnnealingLR, as before warm-up existed
    assert plain[0] == 0.1 and plain == sorted(plain, reverse=True)


@pytest.mark.parametrize("epochs, steps, warmup", [(1, 100, 0.01), (1, 3, 0.5), (2, 2, 0)])
def test_onecycle_on_short_or_one_step_warmups_and_momentum_kept(epochs, steps, warmup):
    values = lrs("onecycle", warmup=warmup, epochs=epochs, steps=steps)  # torch divided by 0
    assert max(values) <= 0.1 + 1e-9
    recipe = Recipe(epochs=4, schedule="onecycle", optimizer="sgd", momentum=0.5)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, recipe, 0.1)
    make_schedule(optimizer, recipe, 10, 0.1)
    assert optimizer.param_groups[0]["momentum"] == 0.5  # not cycled to 0.95


def test_a_batch_size_of_one_trains():
    x, y = images(40)
    torch.manual_seed(0)
    model = build(parse_genome({"layers": [{"id": 1, "op": "dense", "units": 8,
                                            "activation": "relu"}]}), (1, 8, 8), 3)  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    stats = train(model, arrays(x, y), {"epochs": 1, "batch_size": 1}, 0.01, 0)
    assert stats["train_loss"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_label_smoothing_keeps_the_loss_away_from_zero():
    x, y = images()
    losses = {}
    for smoothing in (0.0, 0.3):
        torch.manual_seed(0)
        model = build(IMAGE_GENOME, (1, 8, 8), 3)
        stats = train(model, arrays(x, y), {"epochs": 15, "batch_size": 32,
                                            "label_smoothing": smoothing}, 0.01, 0)  # fmt: skip
        losses[smoothing] = stats["train_loss"]
    # the smoothed target's own entropy is the least loss there is: 0.3 spread over 3 classes
    floor = -(0.8 * np.log(0.8) + 2 * 0.1 * np.log(0.1))
    assert losses[0.0] < 0.1 and losses[0.3] > floor - 1e-3


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_the_cpu_learns_with_float32_weights(precision):
    x, y = images()
    torch.manual_seed(0)
    model = build(IMAGE_GENOME, (1, 8, 8), 3)
    recipe_settings = {"epochs": 6, "batch_size": 32, "precision": precision}
    train(model, arrays(x, y), recipe_settings, 0.01, 0)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not .half()
    recipe = Recipe.of(recipe_settings, torch.device("cpu"))
    assert recipe.precision == precision
    assert accuracy(model, arrays(*images(90, seed=1)), recipe) > 0.8


def test_precision_and_layout_resolve_per_device():
    cpu = Recipe.of({}, torch.device("cpu"))
    assert (cpu.precision, cpu.channels_last, cpu.cudnn_benchmark) == ("fp32", False, False)
    assert Recipe.of({"channels_last": True}, torch.device("cpu")).channels_last


def test_channels_last_trains_the_same_function():
    x, y = images()
    states = []
    for layout in (False, True):
        torch.manual_seed(0)
        model = build(IMAGE_GENOME, (1, 8, 8), 3)
        train(model, arrays(x, y), {"epochs": 3, "batch_size": 32, "channels_last": layout}, 0.01,
              0)  # fmt: skip
        if layout:
            conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        states.append(model.eval()(torch.from_numpy(x[:50])))
    torch.testing.assert_close(states[0], states[1], rtol=1e-4, atol=1e-4)


def test_peak_memory_is_a_metric_and_can_be_an_objective(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_yaml(
        search="search:\n  population: 4\n  generations: 1\n  objectives: [{name: val_accuracy, "
               "goal: max}, {name: peak_memory_mb, goal: min}]\n",
    ))  # fmt: skip
    result = cli("search", "--config", config, "--name", "m", "--runs-dir", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import evonas

    people = evonas.load_run(tmp_path / "m").individuals
    assert (people["peak_memory_mb"] > 0).all()


@pytest.mark.parametrize("setting, message", [
    ("training.augment.flip=true", "training.augment.flip: needs images (C, H, W) or signals "
     "(C, L); task userflat:make has inputs of shape (5,)"),
    ("training.warmup_epochs=3", "training.warmup_epochs: must be less than training.epochs (2)"),
    ("training.precision=fp8", "training.precision"),
    ("training.augment.crop=-1", "training.augment.crop"),
])  # fmt: skip
def test_bad_training_settings_are_one_line_errors(tmp_path, monkeypatch, setting, message):
    (tmp_path / "userflat.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    x = np.random.default_rng(0).normal(size=(40, 5))\n"
        "    return {'x_train': x, 'y_train': (x[:, 0] > 0).astype(int), 'x_val': x[:10],\n"
        "            'y_val': (x[:10, 0] > 0).astype(int)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_yaml(task="task:\n  name: userflat:make\n"))
    result = cli("search", "--config", config, "--set", setting, "--name", "bad",
                 "--runs-dir", tmp_path / "runs", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.slow
def test_torch_compile_trains_a_model():
    pytest.importorskip("torch._inductor")
    x, y = images()
    torch.manual_seed(0)
    model = build(IMAGE_GENOME, (1, 8, 8), 3)
    try:
        train(model, arrays(x, y), {"epochs": 4, "batch_size": 32, "compile": True}, 0.01, 0)
    except Exception as exc:  # no C++ compiler here: say so rather than fail
        if "compiler" in str(exc).lower() or "InvalidCxxCompiler" in type(exc).__name__:
            pytest.skip(f"torch.compile has no working C++ compiler here: {exc}")
        raise
    assert accuracy(model, arrays(*images(90, seed=1))) > 0.8


# --- on a GPU (skipped where there is none) ---------------------------------------------------

TASK = {"name": "synthetic", "options": {"samples": 400, "length": 16}, "split_seed": 0,
        "val_fraction": 0.2, "test_fraction": 0.2}  # fmt: skip
SEQ_GENOME = {"layers": [{"id": 1, "op": "conv", "width": 16, "kernel": 3, "stride": 1,
                          "activation": "relu", "batch_norm": True},
                         {"id": 2, "op": "dense", "units": 32, "activation": "relu"}],
              "training": {"lr": 0.01}}  # fmt: skip


def gpu_job(**training):
    settings_ = {"optimizer": "adam", "epochs": 3, "batch_size": 32, "weight_decay": 0.0,
                 **training}  # fmt: skip
    return Job(1, SEQ_GENOME, 3, TASK, settings_, device="gpu").to_dict()


@CUDA
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16", "fp32"])
def test_cuda_training_with_mixed_precision(precision):
    result = run_job(gpu_job(precision=precision))
    assert result["status"] == "ok", result["error"]
    assert result["device"].startswith("cuda") and result["metrics"]["val_accuracy"] > 0.8
    assert 0 < result["metrics"]["peak_memory_mb"] < 2048  # device memory, not the process's


@CUDA
def test_cuda_out_of_memory_is_status_oom():
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - 32 * 2**20, dtype=torch.uint8, device="cuda")  # leave 32 MiB
    try:
        result = run_job(gpu_job(batch_size=320))
    finally:
        del hog
        torch.cuda.empty_cache()
    assert result["status"] == "oom", result["error"]
