"""Dataset files in their real formats (written small here), their readers, the checksummed
download (from file:// URLs: no network) and tasks made of a user's torch Datasets."""

import gzip
import hashlib
import textwrap

import numpy as np
import pytest
import torch

from evonas import datasets
from evonas.batches import LoaderBatches, TensorBatches, split_of
from evonas.formats import FormatError, download, read_cifar, read_idx
from evonas.tasks import DatasetTask, TaskError, load_task
from tests.conftest import cli, tiny_config_yaml


def spec(name, **options):
    return {"name": name, "options": options, "split_seed": 0, "val_fraction": 0.2,
            "test_fraction": 0.2}  # fmt: skip


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder, n=50, n_test=20, compress=False, side=28):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, side, side)),
        "train-labels-idx1-ubyte": np.arange(n) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_load_as_uint8_images_scaled_on_the_device(tmp_path, compress):
    arrays = write_idx_set(tmp_path / "idx", compress=compress)
    data = load_task(spec("mnist", path=str(tmp_path / "idx")))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.x_train.dtype == np.uint8 and len(data.x_test) == 20
    assert len(data.x_train) + len(data.x_val) == 50
    np.testing.assert_array_equal(data.x_test[:, 0], arrays["t10k-images-idx3-ubyte"])
    x, _ = split_of(data, "test", torch.device("cpu"), {}).take(torch.arange(3))
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:3]).float()[:, None] / 255
    assert torch.equal(x, expected)  # the same floats numpy's `/ 255.0` gave before


def test_idx_limit_and_errors_name_the_file(tmp_path):
    write_idx_set(tmp_path / "idx", n=40)
    data = load_task(spec("fashion_mnist", path=str(tmp_path / "idx"), limit=20))
    assert len(data.x_train) + len(data.x_val) == 20
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09")
    with pytest.raises(TaskError, match="t10k-labels-idx1-ubyte: 8 bytes; its header"):
        load_task(spec("fashion_mnist", path=str(tmp_path / "idx")))
    with pytest.raises(TaskError, match=r"absent/train-images-idx3-ubyte\[\.gz\] not found"):
        load_task(spec("mnist", path=str(tmp_path / "absent")))
    with pytest.raises(TaskError, match="task.options.colour: unknown option of the mnist"):
        load_task(spec("mnist", colour=1))
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(FormatError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def cifar_records(labels, label_bytes=1, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    rows = [bytes(np.atleast_1d(lab).astype(np.uint8)) + img.tobytes()
            for lab, img in zip(labels, images)]  # fmt: skip
    return b"".join(rows), images


def test_cifar10_binary_files_keep_planes_and_labels(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for i in range(1, 6):
        raw, images = cifar_records([i, i + 1, 9], seed=i)
        (folder / f"data_batch_{i}.bin").write_bytes(raw)
        expected.append(images)
    raw, test_images = cifar_records([3, 4])
    (folder / "test_batch.bin").write_bytes(raw)
    data = load_task(spec("cifar10", path=str(tmp_path)))  # the unpacked archive's parent
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    np.testing.assert_array_equal(data.x_test, test_images)  # red, green, blue planes in order
    assert list(data.y_test) == [3, 4]
    train = np.concatenate([data.x_train, data.x_val])
    assert sorted(map(bytes, train)) == sorted(map(bytes, np.concatenate(expected)))
    scaling = data.scaling
    assert scaling.divisor == 255 and len(scaling.mean) == 3 and len(scaling.std) == 3
    x, _ = split_of(data, "train", torch.device("cpu"), {}).take(torch.arange(len(data.x_train)))
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # standardised with the training split's
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2  # own mean and deviation


def test_cifar100_fine_or_coarse_labels_and_a_truncated_file(tmp_path):
    raw, _ = cifar_records([[1, 71], [2, 42]], label_bytes=2)
    (tmp_path / "train.bin").write_bytes(raw * 10)
    (tmp_path / "test.bin").write_bytes(raw)
    assert list(load_task(spec("cifar100", path=str(tmp_path))).y_test) == [71, 42]
    coarse = load_task(spec("cifar100", path=str(tmp_path), labels="coarse"))
    assert list(coarse.y_test) == [1, 2]
    (tmp_path / "test.bin").write_bytes(raw[:-5])
    with pytest.raises(TaskError, match="test.bin: 6143 bytes is not a whole number"):
        load_task(spec("cifar100", path=str(tmp_path), labels="fine"))
    with pytest.raises(FormatError, match="3074-byte CIFAR records"):
        read_cifar(tmp_path / "test.bin", 2, 1)


def write_images(folder, classes, per_class, size=(6, 5), mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}.png")


def test_image_folder_tree_with_and_without_split_folders(tmp_path):
    write_images(tmp_path / "flat", ["cat", "dog", "emu"], 10)
    data = load_task(spec("image_folder", path=str(tmp_path / "flat")))
    assert data.input_shape == (3, 6, 5) and data.num_classes == 3
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 30
    write_images(tmp_path / "split" / "train", ["a", "b"], 8)
    write_images(tmp_path / "split" / "test", ["a", "b"], 3)
    data = load_task(spec("image_folder", path=str(tmp_path / "split"), size=[4, 4], channels=1))
    assert data.input_shape == (1, 4, 4) and len(data.x_test) == 6
    assert list(data.y_test) == [0, 0, 0, 1, 1, 1]


def test_image_folder_errors(tmp_path):
    write_images(tmp_path / "mixed", ["a"], 2)
    write_images(tmp_path / "other", ["b"], 1, size=(7, 7))
    (tmp_path / "other" / "b").rename(tmp_path / "mixed" / "b")
    with pytest.raises(TaskError, match=r"b/0.png: 7x7 pixels, unlike the first image \(5x6\)"):
        load_task(spec("image_folder", path=str(tmp_path / "mixed")))
    (tmp_path / "mixed" / "b" / "1.png").write_bytes(b"not an image")
    with pytest.raises(TaskError, match="1.png: not a readable image"):
        load_task(spec("image_folder", path=str(tmp_path / "mixed"), size=[5, 5]))
    with pytest.raises(TaskError, match="no class folders"):
        load_task(spec("image_folder", path=str(tmp_path / "mixed" / "a")))
    with pytest.raises(TaskError, match=r"task.options.size: expected \[height, width\]"):
        load_task(spec("image_folder", path=str(tmp_path / "mixed"), size=5))


def test_sixteen_bit_images_are_refused_not_clipped(tmp_path):
    from PIL import Image

    (tmp_path / "deep" / "a").mkdir(parents=True)
    pixels = np.full((4, 4), 30000, dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep" / "a" / "0.png")
    with pytest.raises(TaskError, match="0.png: I;16 pixels .16-bit or float.; expected 8-bit"):
        load_task(spec("image_folder", path=str(tmp_path / "deep"), channels=1))


def test_a_truncated_archive_is_a_format_error_and_extracts_nothing(tmp_path):
    import io
    import tarfile

    from evonas.formats import extract

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(FormatError, match="a.tar.gz: cannot extract"):
        extract(archive, ["test_batch.bin"], tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # no half file under the real name


def test_download_checks_the_checksum_before_the_file_is_used(tmp_path):
    source = tmp_path / "published.gz"
    source.write_bytes(gzip.compress(b"payload"))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "file.gz"
    with pytest.raises(FormatError, match="downloaded file has MD5"):
        download(source.as_uri(), dest, "0" * 32)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written left
    assert download(source.as_uri(), dest, md5).read_bytes() == source.read_bytes()
    with pytest.raises(FormatError, match="download failed"):
        download((tmp_path / "absent").as_uri(), tmp_path / "x", md5)


def test_download_true_fetches_the_idx_files(tmp_path, monkeypatch):
    published = tmp_path / "mirror"
    write_idx_set(published, compress=True)
    md5s = tuple(hashlib.md5((published / f"{s}.gz").read_bytes()).hexdigest()
                 for s in datasets.IDX_FILES)  # fmt: skip
    monkeypatch.setitem(datasets.IDX_SOURCES, "mnist", (published.as_uri() + "/", md5s))
    target = tmp_path / "data"
    data = load_task(spec("mnist", path=str(target), download=True))
    assert len(data.x_test) == 20 and sorted(p.name for p in target.iterdir()) == sorted(
        f"{s}.gz" for s in datasets.IDX_FILES
    )


USER_DATASETS = """
import numpy as np
import torch
from torch.utils.data import Dataset

class Signals(Dataset):
    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 3, n)
        templates = np.random.default_rng(99).integers(0, 200, (3, 2, 6, 6))
        noise = rng.integers(0, 50, (n, 2, 6, 6))
        self.x = (templates[self.y] + noise).astype(np.uint8)
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])

def make(n=120):
    return {"train": Signals(n, 0), "val": Signals(40, 1), "test": Signals(30, 2)}
"""


@pytest.fixture
def user_datasets(tmp_path):
    (tmp_path / "userdata.py").write_text(textwrap.dedent(USER_DATASETS))
    yield f"{tmp_path / 'userdata.py'}:make"  # by file: loky workers need no sys.path


def test_user_uint8_arrays_of_any_layout_are_kept_as_uint8(tmp_path):
    (tmp_path / "flipped.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    x = np.arange(40 * 16, dtype=np.uint8).reshape(40, 1, 4, 4)[:, :, ::-1]\n"
        "    return {'x_train': x, 'y_train': np.arange(40) % 2, 'x_val': x[:8],\n"
        "            'y_val': np.arange(8) % 2}\n"
    )
    data = load_task(spec(f"{tmp_path / 'flipped.py'}:make"))
    assert data.x_train.dtype == np.uint8 and data.scaling.divisor == 255
    x, _ = split_of(data, "train", torch.device("cpu"), {}).take(torch.arange(2))
    assert x.shape == (2, 1, 4, 4)


def test_dataset_items_must_be_channel_first(tmp_path):
    (tmp_path / "pil.py").write_text(
        "from PIL import Image\n"
        "class Images:\n"
        "    def __len__(self): return 4\n"
        "    def __getitem__(self, i): return Image.new('L', (4, 4)), 0\n"
        "def make(): return {'train': Images(), 'val': Images()}\n"
    )
    with pytest.raises(TaskError, match="not PIL images"):
        load_task(spec(f"{tmp_path / 'pil.py'}:make"))


def test_a_dataset_factory_task_is_served_by_a_dataloader(user_datasets):
    data = load_task(spec(user_datasets))
    assert isinstance(data, DatasetTask)
    assert data.input_shape == (2, 6, 6) and data.num_classes == 3 and data.has_test
    cpu = torch.device("cpu")
    assert isinstance(split_of(data, "train", cpu, {}), LoaderBatches)
    on_device = split_of(data, "train", cpu, {"loader": "device"})
    assert isinstance(on_device, TensorBatches)
    assert split_of(data, "train", cpu, {"loader": "device"}).x is on_device.x  # read once


def test_loader_and_device_batches_train_the_same_model(user_datasets):
    """Both sources take the order from the trainer: the same batches, the same weights."""
    from evonas.builder import build
    from evonas.genome import parse_genome
    from evonas.train import accuracy, train

    data = load_task(spec(user_datasets))
    conv = {"id": 1, "op": "conv", "width": 4, "kernel": 3, "stride": 1, "activation": "relu",
            "batch_norm": True}  # fmt: skip
    genome = parse_genome({"layers": [conv, {"id": 2, "op": "dense", "units": 8,
                                             "activation": "relu"}]})  # fmt: skip
    results = []
    for loader, workers in (("device", 0), ("workers", 0), ("workers", 2)):
        settings = {"epochs": 10, "batch_size": 16, "loader": loader, "loader_workers": workers,
                    "augment": {"crop": 1, "flip": True, "cutout": 2}}  # fmt: skip
        torch.manual_seed(0)
        model = build(genome, data.input_shape, data.num_classes)
        train(model, split_of(data, "train", torch.device("cpu"), settings), settings, 0.003, 3)
        val = accuracy(model, split_of(data, "val", torch.device("cpu"), settings))
        results.append((model.state_dict(), val))
    for state, val in results[1:]:
        assert val == results[0][1]
        for key, tensor in state.items():
            torch.testing.assert_close(tensor, results[0][0][key], rtol=0, atol=0)
    assert results[0][1] > 0.6  # three classes: chance is 1/3


def test_a_search_on_a_dataset_factory_through_the_cli(tmp_path, user_datasets):
    """Two loky workers, each running a DataLoader with worker processes of its own."""
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_yaml(
        task=f"task:\n  name: {user_datasets}\n",
        training="training:\n  epochs: 2\n  batch_size: 16\n  loader_workers: 1\n"
                 "  augment: {crop: 1, flip: true}\n",
    ) + "parallel:\n  n_jobs: 2\n")  # fmt: skip
    result = cli("search", "--config", config, "--name", "ds", "--runs-dir", tmp_path / "runs",
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    import evonas

    people = evonas.load_run(tmp_path / "runs" / "ds").individuals
    assert (people["status"] == "ok").all(), people["error"].tolist()
    assert people["test_accuracy"].notna().all() and (people["peak_memory_mb"] > 0).all()
