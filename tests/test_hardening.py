"""The catalogue of issue 19's faults, one test (or a few) per item, each on the clean error it
now gives and on what it leaves on disk (nothing partial).  The gateware's side of items 1 and
2 runs on the link bridge and the engine in Amaranth's simulator; the whole link under faults
is tests/test_board_sim.py's campaign."""

import json
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.boards import protocol
from sparseforge.boards.device import Device, LinkError
from sparseforge.cli import main
from sparseforge.compiler import isa
from sparseforge.compiler.compress.accounting import account
from sparseforge.compiler.compress.model import CompressedModel, CompressedModelError
from sparseforge.compiler.errors import InputError, UserError
from sparseforge.compiler.ir import Linear, Network
from sparseforge.compiler.program import ProgramError, load_program
from tests.oracle import build_image
from tests.test_golden import random_network
from tests.test_hw_engine import golden
from tests.test_link_bridge import SECOND_STAMP, SESSION, make_model, request, run_link

Op, Status = protocol.Opcode, protocol.Status


# The head of an iCE40 bitstream as icepack writes it: a comment, then the sync word.
ICE40_BITS = bytes.fromhex("ff0000ff7eaa997e5100010592002062")


def leftovers(folder):
    """Temporary files or folders a write left behind (ours start with a dot)."""
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture(scope="module")
def network():
    return random_network(np.random.default_rng(31), [64, 24, 10], density=0.3)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, network):
    float_network = Network(tuple(
        Linear(layer.name, layer.weights * 2.0 ** -layer.weight_format.frac,
               layer.bias * 2.0 ** -layer.accumulator_frac, layer.relu)
        for layer in network.layers))
    path = tmp_path_factory.mktemp("model") / "m.sfm"
    CompressedModel(network, float_network, account(network)).save(path)
    return path


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory, network):
    return sf.compile(network, pes=4).save(tmp_path_factory.mktemp("prog") / "prog")


def cli(capsys, *argv):
    """``sparseforge argv...`` in this process: (status, stdout, stderr)."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_error(out):
    payload = json.loads(out)                     # exactly one object
    assert set(payload) == {"error"}
    return payload["error"]


# ---- 1: a new host session is never answered from an old one's cache ---------------------------

def test_1_a_new_session_is_not_answered_from_the_old_ones_cache():
    config, layers, image, x = make_model(4, 2)
    x0, x1 = x, (x * 7 + 3) % 200 - 100
    nonce = SESSION ^ 0x5555
    other = nonce ^ SECOND_STAMP            # the session the board makes of the second CONNECT

    def sessioned(payload, session):
        return struct.pack("<H", session) + payload

    # Session A loads x0 and stops before RUN; session B, numbering from where A did, loads
    # x1 and runs: B's outputs are x1's.  A LOAD_INPUT with the number of the RUN before it is
    # not answered from the RUN's cached reply.
    replies, _ = run_link(config, image, [
        request(0, Op.CONNECT, struct.pack("<H", SESSION)),
        request(1, Op.LOAD_INPUT, struct.pack(f"<{len(x0)}h", *x0)),
        protocol.encode_frame(0, Op.CONNECT, struct.pack("<H", nonce)),
        protocol.encode_frame(1, Op.LOAD_INPUT,
                              sessioned(struct.pack(f"<{len(x1)}h", *x1), other)),
        protocol.encode_frame(2, Op.RUN, sessioned(b"", other)),
        protocol.encode_frame(2, Op.LOAD_INPUT,
                              sessioned(struct.pack(f"<{len(x0)}h", *x0), other)),
        protocol.encode_frame(3, Op.READ_OUTPUT, struct.pack("<H", 6)),
    ])
    codes = [reply[0].code for reply in replies]
    assert codes == [Status.OK] * 5 + [Status.STALE, Status.OK]
    assert struct.unpack("<H", replies[2][0].payload) == (other,)
    outputs = struct.unpack("<6h", replies[6][0].payload)
    assert list(outputs) == golden(layers, x1[None])[-1][0].tolist()


# ---- 2: a half-loaded image never runs ---------------------------------------------------------

def test_2_a_load_cut_short_leaves_no_image_that_runs():
    config, layers, image, x = make_model(4, 2)
    writes = isa.image_bus_writes(config, image)
    half = writes[:len(writes) // 2]
    frames = [request(0, Op.CONNECT, struct.pack("<H", SESSION))]
    frames += [request(1 + i, Op.WRITE, struct.pack("<II", int(a), int(d)))
               for i, (a, d) in enumerate(half[:3])]
    frames += [request(10, Op.INFO), request(11, Op.RUN)]
    replies, ran = run_link(config, image, frames)
    info = struct.unpack(protocol.INFO_LAYOUT, replies[-2][0].payload)
    assert info[-1] == 0                                   # no complete image
    assert replies[-1][0].code == Status.NO_IMAGE and not ran[-1]


def test_2_the_host_refuses_a_board_with_another_image():
    config, _, image, _ = make_model(4, 2)
    mine = protocol.image_identity(isa.image_bus_writes(config, image))
    board = FakeBoard(info_image=mine ^ 1)
    with pytest.raises(UserError, match="the board holds image .* not this program's"):
        Device(board, retries=1, timeout=0.01).require_image(config, image)
    with pytest.raises(UserError, match="holds no complete image"):
        Device(FakeBoard(info_image=0), retries=1, timeout=0.01).require_image(config, image)


# ---- 3: every reply's length is checked --------------------------------------------------------

class FakeBoard:
    """A transport whose board answers INFO with ``info_payload`` (or a good INFO)."""
    byte_seconds = 1e-6

    def __init__(self, info_payload=None, info_image=0):
        self.info_payload = info_payload
        self.info_image = info_image
        self.pending = b""
        self.now = 0.0

    def write(self, data):
        (frame,) = protocol.SlipDecoder().feed(data)
        request_ = protocol.decode_frame(frame)
        payload = self.info_payload
        if payload is None:
            payload = struct.pack(protocol.INFO_LAYOUT, 0x53463031, 4, 0, 2, 256, 0,
                                  self.info_image)
        self.pending = protocol.encode_frame(request_.seq, Status.OK, payload)

    def read(self, timeout):
        self.now += timeout
        data, self.pending = self.pending, b""
        return data

    def clock(self):
        return self.now


def test_3_a_reply_of_the_wrong_length_is_a_clean_error():
    device = Device(FakeBoard(info_payload=b"\x01\x02"), retries=2, timeout=0.01)
    with pytest.raises(LinkError, match="INFO: the board's reply has 2 payload bytes, not 24"):
        device.info()


# ---- 4: outputs written whole, never through a symbolic link ----------------------------------

def test_4_compile_does_not_write_through_symbolic_links(tmp_path, model_file, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    status, _, _ = cli(capsys, "compile", model_file, "--pes", "2", "-o", tmp_path / "prog",
                       "--no-verilog")
    assert status == 0
    (tmp_path / "prog" / "report.json").unlink()
    (tmp_path / "prog" / "report.json").symlink_to(outside)
    (tmp_path / "prog" / "engine.v.tmp").symlink_to(outside)
    status, _, _ = cli(capsys, "compile", model_file, "--pes", "2", "-o", tmp_path / "prog")
    assert status == 0
    assert outside.read_text() == "precious"
    assert not (tmp_path / "prog" / "report.json").is_symlink()
    assert not (tmp_path / "prog" / "engine.v.tmp").exists()
    (tmp_path / "link").symlink_to(tmp_path / "prog")
    status, _, err = cli(capsys, "compile", model_file, "-o", tmp_path / "link", "--no-verilog")
    assert status == 2 and "is a symbolic link: refusing" in err
    assert leftovers(tmp_path) == []


def test_4_an_interrupted_compile_leaves_the_old_program(tmp_path, network, monkeypatch):
    program = sf.compile(network, pes=4)
    directory = program.save(tmp_path / "prog")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    def interrupted(folder):
        (folder / "engine.v").write_text("// half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sf.compile(network, pes=2).save(directory, extra=interrupted)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert load_program(directory).config.pes == 4
    assert leftovers(tmp_path) == []


def test_4_two_saves_into_one_fresh_folder(tmp_path, network):
    programs = [sf.compile(network, pes=pes) for pes in (2, 4)]
    errors = []

    def save(program):
        try:
            program.save(tmp_path / "prog")
        except Exception as error:             # noqa: BLE001 - the test reports any
            errors.append(error)

    threads = [threading.Thread(target=save, args=(p,)) for p in programs for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert load_program(tmp_path / "prog").config.pes in (2, 4)    # one whole program
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog"]


def test_4_a_folder_that_cannot_be_moved_or_written_is_an_error_naming_it(
        tmp_path, model_file, capsys, monkeypatch):
    # What an existing read-only folder does for a user who is not root: the rename that
    # moves it aside (or puts the new one in place) is refused.
    import os as os_module

    (tmp_path / "prog").mkdir()
    rename = os_module.rename

    def refused(source, target):
        if Path(source) == tmp_path / "prog" or Path(target) == tmp_path / "prog":
            raise PermissionError(13, "Permission denied")
        rename(source, target)

    monkeypatch.setattr(os_module, "rename", refused)
    status, out, err = cli(capsys, "compile", model_file, "-o", tmp_path / "prog", "--json",
                           "--no-verilog")
    assert status == 2 and "Permission denied" in json_error(out)
    assert f"{tmp_path / 'prog'}" in json_error(out) and "Traceback" not in err
    assert leftovers(tmp_path) == []
    (tmp_path / "prog").rmdir()
    status, out, err = cli(capsys, "compile", model_file, "-o", tmp_path / "prog", "--json",
                           "--no-verilog")
    assert status == 2 and "cannot write the program" in json_error(out)
    assert leftovers(tmp_path) == []


def test_4_a_compile_stopped_by_sigterm_leaves_nothing_half_written(tmp_path, model_file):
    import os
    import signal
    import subprocess
    import sys
    import time

    compile_ = subprocess.Popen([sys.executable, "-m", "sparseforge", "compile", model_file,
                                 "-o", tmp_path / "prog"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".prog.*.tmp")) and compile_.poll() is None:
        assert time.monotonic() < deadline, "the compile never started writing"
        time.sleep(0.02)
    os.kill(compile_.pid, signal.SIGTERM)
    _, err = compile_.communicate(timeout=120)
    if compile_.returncode == 0:
        pytest.skip("the compile finished before the signal arrived")
    assert compile_.returncode == 143 and err.strip().endswith("terminated"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_4_a_mix_of_two_compiles_is_refused(tmp_path, model_file, capsys):
    for name, pes in (("a", 2), ("b", 4)):
        assert cli(capsys, "compile", model_file, "--pes", pes, "-o", tmp_path / name)[0] == 0
    (tmp_path / "a" / "engine.v").write_bytes((tmp_path / "b" / "engine.v").read_bytes())
    with pytest.raises(ProgramError, match="engine.v is not the file this program was saved"):
        load_program(tmp_path / "a")


# ---- 5: simulations clean up ------------------------------------------------------------------

def test_4_outputs_follow_the_umask_like_files_written_directly(tmp_path, network,
                                                              model_file):
    # Written through private temporaries (mkstemp, mkdtemp), renamed into place.
    import os
    old = os.umask(0o022)
    try:
        program = sf.compile(network, pes=2).save(tmp_path / "prog")
        compressed = sf.load_compressed(model_file).save(tmp_path / "model.sfm")
    finally:
        os.umask(old)
    assert (program.stat().st_mode & 0o777) == 0o755
    assert ((program / "program.json").stat().st_mode & 0o777) == 0o644
    assert (compressed.stat().st_mode & 0o777) == 0o644


def test_5_simulate_without_a_build_dir_leaves_no_folder(network, monkeypatch, tmp_path):
    from sparseforge.sim import simulate as simulate_module
    from sparseforge.sim.rtl import RtlResult

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    program = sf.compile(network, pes=4)
    x = np.random.default_rng(1).normal(size=(3, 64))

    def fake_rtl(config, cases, *, build_dir, **options):
        (build_dir / "obj_dir").mkdir()
        (build_dir / "obj_dir" / "Vengine").write_bytes(bytes(1000))
        cycles = np.ones((3, program.layer_count), dtype=np.int64)
        return [RtlResult("program", cases[0].expected, cycles, 0.1)]

    monkeypatch.setattr(simulate_module, "run_rtl", fake_rtl)
    result = sf.simulate(program, x)
    assert result.mismatches == 0
    assert list(tmp_path.iterdir()) == []


# ---- 6: flash from another folder ---------------------------------------------------------------

def test_6_flash_finds_the_bitstream_from_another_folder(tmp_path, monkeypatch, capsys):
    from sparseforge.boards.build import Build, _record

    monkeypatch.chdir(tmp_path)
    bitstream = tmp_path / "build" / "prog" / "bitstream" / "attempt1" / "top.bin"
    bitstream.parent.mkdir(parents=True)
    bitstream.write_bytes(ICE40_BITS)
    built = Build("icebreaker", bitstream.relative_to(tmp_path), 30.0, 33.0, {}, 1.0,
                  bitstream.parents[1].relative_to(tmp_path),
                  [{"asked_mhz": 33, "fmax_mhz": 30, "seconds": 1,
                    "build_dir": "build/prog/bitstream/attempt1"}])
    record = _record(built, bitstream.parents[1].relative_to(tmp_path))
    assert record["bitstream"] == "attempt1/top.bin"
    (bitstream.parents[1] / "build.json").write_text(json.dumps(record))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sparseforge.boards.flash.programmer_command",
                        lambda board, path: ["openFPGALoader", "-b", board, str(path)])
    status, out, err = cli(capsys, "flash", tmp_path / "build" / "prog", "--dry-run", "--json")
    assert status == 0, err
    command = json.loads(out)["command"]
    assert Path(command[-1]).read_bytes() == ICE40_BITS


def test_6_flash_refuses_what_is_not_the_boards_bitstream(tmp_path, model_file, capsys):
    (tmp_path / "ecp5.bit").write_bytes(b"\xff\x00Part: LFE5U-85F\x00\xff\xff\xff\xbd\xb3")
    cases = ((["--board", "icebreaker"], "no build found"),
             (["--board", "icebreaker", "--bitstream", tmp_path / "none.bin"],
              "no such bitstream"),
             (["--board", "icebreaker", "--bitstream", tmp_path], "is a folder"),
             (["--board", "icebreaker", "--bitstream", model_file],
              "is not an ICE40 bitstream"),
             (["--board", "icebreaker", "--bitstream", tmp_path / "ecp5.bit"],
              "is not an ICE40 bitstream"))
    for options, message in cases:
        for dry_run in ([], ["--dry-run"]):
            status, out, _ = cli(capsys, "flash", tmp_path, *options, *dry_run, "--json")
            assert status == 2 and message in json_error(out), (options, out)
    status, out, _ = cli(capsys, "flash", tmp_path, "--board", "ulx3s-85f", "--bitstream",
                         tmp_path / "ecp5.bit", "--dry-run", "--json")
    assert status == 0 and json.loads(out)["flashed"] is False


# ---- 7: tracebacks become errors (exit 2) -------------------------------------------------------

@pytest.mark.parametrize("inputs,message", [
    (np.zeros((3, 30)), "30 features per row, the model takes 64"),
    (np.full((2, 64), np.nan), "NaN or infinite values"),
    (np.full((2, 64), np.inf), "NaN or infinite values"),
    (np.zeros((0, 64)), "hold no rows"),
    (np.zeros(64), "must be batch x features"),
    (np.array([["a"] * 64]), "must be numbers"),
])
def test_7_sim_refuses_bad_inputs(tmp_path, program_dir, capsys, inputs, message):
    np.save(tmp_path / "x.npy", inputs)
    status, out, err = cli(capsys, "sim", program_dir, "--inputs", tmp_path / "x.npy",
                           "--build-dir", tmp_path / "sim", "--json")
    assert status == 2 and message in json_error(out) and "Traceback" not in err
    assert not (tmp_path / "sim").exists()


def test_7_run_refuses_bad_inputs_before_it_looks_for_a_port(tmp_path, program_dir, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 30)))
    status, out, err = cli(capsys, "run", program_dir, "--input", tmp_path / "x.npy",
                           "--port", tmp_path / "no-such-port", "--json")
    assert status == 2 and "30 features per row, the model takes 64" in json_error(out)


@pytest.mark.parametrize("count", ["-3", "0"])
def test_7_8_a_count_under_one_is_refused(program_dir, capsys, count):
    status, out, _ = cli(capsys, "sim", program_dir, "--count", count, "--json")
    assert status == 2 and "must be at least 1" in json_error(out)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_7_a_layer_without_inputs_or_outputs():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 0), torch.nn.ReLU(), torch.nn.Linear(0, 3))
    with pytest.raises(InputError, match="has shape \\(0, 4\\) .* without inputs or outputs"):
        sf.compress(model, (np.zeros((8, 4)), np.zeros(8, dtype=np.int64)))


def test_7_an_onnx_gemm_with_one_input(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    status, out, err = cli(capsys, "compress", tmp_path / "m.onnx", "-o", tmp_path / "m.sfm",
                           "--json")
    assert status == 2 and "'fc' cannot run on the engine (Gemm with 1 input" in json_error(out)
    assert not (tmp_path / "m.sfm").exists()


def rewrite_sfm(source, target, change):
    with zipfile.ZipFile(source) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        arrays = archive.read("arrays.npz")
    change(manifest)
    manifest.pop("content_sha256", None)    # by hand, without the digest: its fields checked
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("arrays.npz", arrays)
    return target


@pytest.mark.parametrize("change,message", [
    (lambda m: m["layers"][0]["codebook"].__setitem__(1, 10 ** 30),
     "codebook value 1000000000000000000000000000000 does not fit its"),
    (lambda m: m.__setitem__("provenance", ["a", "list"]),
     "manifest 'provenance' must be an object, not list"),
])
def test_7_9_sfm_fields_are_checked(tmp_path, model_file, capsys, change, message):
    bad = rewrite_sfm(model_file, tmp_path / "bad.sfm", change)
    with pytest.raises(CompressedModelError, match=message):
        sf.load_compressed(bad)
    status, out, _ = cli(capsys, "compile", bad, "-o", tmp_path / "prog", "--json")
    assert status == 2 and message.split(" does")[0] in json_error(out)
    assert not (tmp_path / "prog").exists()


def test_7_compile_onto_a_file_or_an_unwritable_path(tmp_path, model_file, capsys):
    (tmp_path / "file").write_text("mine")
    status, out, _ = cli(capsys, "compile", model_file, "-o", tmp_path / "file", "--json",
                         "--no-verilog")
    assert status == 2 and "exists and is not a folder" in json_error(out)
    assert (tmp_path / "file").read_text() == "mine"
    status, out, _ = cli(capsys, "compile", model_file, "-o", tmp_path / "file" / "prog",
                         "--json", "--no-verilog")
    assert status == 2 and "cannot write the program" in json_error(out)
    assert leftovers(tmp_path) == []


def test_7_compress_of_a_file_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.pt").write_bytes(b"e" * 200)
    status, out, err = cli(capsys, "compress", tmp_path / "notes.pt", "-o", tmp_path / "m.sfm",
                           "--json")
    assert status == 2 and "cannot be loaded with torch.load(weights_only=True)" in \
        json_error(out)
    assert "Traceback" not in err and not (tmp_path / "m.sfm").exists()


def test_7_a_file_of_the_other_numpy_kind_is_named(tmp_path, program_dir, capsys):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp

    torch.save(digits_mlp(16).state_dict(), tmp_path / "m.pt")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 64)))
    np.save(tmp_path / "x.npy", np.zeros((2, 64)))
    status, out, _ = cli(capsys, "sim", program_dir, "--inputs", tmp_path / "x.npz", "--json")
    assert status == 2
    assert "must be an .npy array (np.save); this file is an .npz archive" in json_error(out)
    status, out, _ = cli(capsys, "compress", tmp_path / "m.pt", "--data", tmp_path / "x.npy",
                         "-o", tmp_path / "m.sfm", "--json")
    assert status == 2
    assert "must be an .npz archive (np.savez) of named arrays; this file is an .npy array" \
        in json_error(out)
    assert not (tmp_path / "m.sfm").exists()


def test_7_a_state_dict_that_does_not_fit_names_its_keys(tmp_path, capsys):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp

    state = digits_mlp(16).state_dict()
    del state["fc2.bias"]
    torch.save(state, tmp_path / "m.pt")
    status, out, _ = cli(capsys, "compress", tmp_path / "m.pt", "-o", tmp_path / "m.sfm",
                         "--json")
    assert status == 2 and 'Missing key(s) in state_dict: "fc2.bias"' in json_error(out)


# ---- 8: labels ----------------------------------------------------------------------------------

@pytest.mark.parametrize("labels,message", [
    (np.array([1, 2]), "2 labels for 3 inputs"),
    (np.array([1, 99, 2]), "label 99 is not a class of the model's 10 outputs"),
    (np.array([1.0, 2.5, 3.0]), "labels must be integers"),
])
def test_8_bad_labels_are_refused(tmp_path, program_dir, capsys, labels, message):
    np.save(tmp_path / "x.npy", np.zeros((3, 64)))
    np.save(tmp_path / "y.npy", labels)
    status, out, _ = cli(capsys, "sim", program_dir, "--inputs", tmp_path / "x.npy",
                         "--labels", tmp_path / "y.npy", "--json")
    assert status == 2 and message in json_error(out)


# ---- 9: strict manifests, no decompression bomb ------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("relu", "false", "relu must be true or false, not 'false'"),
    ("code_bits", 4.7, "code_bits must be a positive integer, not 4.7"),
    ("in_features", True, "in_features must be a positive integer, not True"),
])
def test_9_program_json_is_parsed_strictly(tmp_path, network, field, value, message):
    directory = sf.compile(network, pes=4).save(tmp_path / "prog")
    manifest = json.loads((directory / "program.json").read_text())
    manifest["layers"][0][field] = value
    (directory / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match=message):
        load_program(directory)


def test_9_a_decompression_bomb_is_refused_before_unpacking(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.sfm"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", "{}")
        archive.writestr("arrays.npz", bytes(200 << 20))
    assert bomb.stat().st_size < 400_000
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a: pytest.fail("unpacked"))
    with pytest.raises(CompressedModelError, match="unpacks to 209,715,2.. bytes, more than"):
        sf.load_compressed(bomb)


# ---- 10: the newcomer's papercuts ---------------------------------------------------------------

def test_10_compress_names_the_default_data(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((5, 30), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 30])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])], [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    status, out, _ = cli(capsys, "compress", tmp_path / "m.onnx", "-o", tmp_path / "m.sfm",
                         "--json")
    error = json_error(out)
    assert status == 2 and "takes 30 inputs" in error
    assert "scikit-learn's 8x8 digits (64 features): pass --data" in error
    assert not (tmp_path / "m.sfm").exists()


def test_10_compress_with_data_and_no_model_trains_the_default_mlp_on_that_data(tmp_path,
                                                                              capsys):
    # Three separable classes of 5 features: the default MLP must take 5 inputs and give 3
    # outputs, trained on these samples (not on the digits).
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    x = (rng.normal(0, 0.3, (300, 5)) + np.eye(3, 5)[labels] * 2).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x[:200], y_train=labels[:200], x_test=x[200:],
             y_test=labels[200:])
    status, out, _ = cli(capsys, "compress", "--data", tmp_path / "d.npz", "-o",
                         tmp_path / "m.sfm", "--json")
    assert status == 0, out
    model = sf.load_compressed(tmp_path / "m.sfm")
    layers = model.network.layers
    assert (layers[0].in_features, layers[-1].out_features) == (5, 3)
    assert model.report.accuracy_float > 0.9


def test_10_compress_refuses_an_unwritable_output_before_training(tmp_path, capsys,
                                                                  monkeypatch):
    import sparseforge.compiler.compress.digits as digits

    monkeypatch.setattr(digits, "train_float", lambda **_: pytest.fail("trained first"))
    (tmp_path / "file").write_text("mine")
    for output, message in ((tmp_path / "file" / "m.sfm", "is not a folder"),
                            (tmp_path, "it is a folder")):
        status, out, _ = cli(capsys, "compress", "-o", output, "--json")
        assert status == 2 and f"cannot write {output}" in json_error(out)
        assert message in json_error(out)
    assert (tmp_path / "file").read_text() == "mine"


def test_10_training_data_of_complex_or_text_values_is_refused(tmp_path, capsys):
    for values in (np.ones((20, 3), np.complex64), np.full((20, 3), "1.0")):
        np.savez(tmp_path / "d.npz", x_train=values, y_train=np.zeros(20, np.int64))
        status, out, _ = cli(capsys, "compress", "--data", tmp_path / "d.npz", "-o",
                             tmp_path / "m.sfm", "--json")
        assert status == 2 and "X must hold real numbers" in json_error(out)


def test_10_demo_refuses_too_many_pes_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sparseforge.compiler.compress.digits.train_float",
                        lambda **_: pytest.fail("trained"))
    status, out, _ = cli(capsys, "demo", "--pes", "16", "--out", tmp_path / "demo", "--json")
    assert status == 2
    assert "16 PEs do not fit the iCEBreaker" in json_error(out)
    assert not (tmp_path / "demo").exists()


def test_10_errors_carry_no_colour_codes_and_lines_stay_whole(tmp_path, model_file, capsys):
    status, _, err = cli(capsys, "compile", tmp_path / "missing.sfm")
    assert status == 2 and err.startswith("error: ") and "\x1b[" not in err
    status, out, _ = cli(capsys, "compile", model_file, "--pes", "2", "-o", tmp_path / "p",
                         "--no-verilog")
    assert status == 0 and "\x1b[" not in out
    assert any(len(line) > 80 for line in out.splitlines())   # not wrapped for a pipe


def test_10_a_branching_model_is_refused_in_plain_words():
    import torch

    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.gate = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) * torch.sigmoid(self.gate(x))

    with pytest.raises(UserError) as caught:
        sf.compress(Branches(), (np.zeros((8, 4)), np.zeros(8, dtype=np.int64)))
    message = str(caught.value)
    assert "cannot run on the engine (not a chain of layers" in message
    assert "is a R" not in message


# ---- 11: --json, --version, --help --------------------------------------------------------------

def test_11_json_errors_and_version(tmp_path, capsys):
    status, out, _ = cli(capsys, "sim", tmp_path / "nothing", "--json")
    assert status == 2 and "is not a compiled program" in json_error(out)
    status, out, _ = cli(capsys, "--version")
    assert status == 0 and out.strip() == f"sparseforge {sf.__version__}"


@pytest.mark.parametrize("verb", ["compress", "compile", "sim", "build", "flash", "run",
                                  "report", "demo", "doctor"])
def test_11_every_verb_has_a_plain_help(capsys, verb):
    status, out, _ = cli(capsys, verb, "--help")
    assert status == 0
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    description = out.split("\n\n")[1]
    assert not description.startswith(("positional", "options")), out
    assert "(default: 8) (default" not in out and "(default 8)" not in out
    if "--board" in out:
        assert "one of: icebreaker, orangecrab-25f" in " ".join(out.split())


def test_an_image_identity_follows_every_word():
    config, layers, image, _ = make_model(4, 2)
    first = protocol.image_identity(isa.image_bus_writes(config, image))
    assert first == protocol.image_identity(isa.image_bus_writes(config,
                                                                 build_image(config, layers)))
    writes = isa.image_bus_writes(config, image).copy()
    writes[5, 1] ^= 1
    assert protocol.image_identity(writes) not in (0, first)


# ---- 12: the report ------------------------------------------------------------------------------

def test_12_the_scan_floor_is_below_every_prediction(network):
    from sparseforge.run_report import _scan_floor
    from sparseforge.sim.simulate import predict

    program = sf.compile(network, pes=4)
    x = program.quantize_input(np.random.default_rng(4).normal(size=(20, 64)))
    x[0] = 0                            # an input of zeros: the first layer at its floor
    predicted = np.array([[t.cycles for t in row] for row in predict(program, x)])
    floor = _scan_floor(program)
    assert np.all(predicted >= floor[None, :])
    assert predicted[0, 0] == floor[0]


def test_12_the_report_plots(tmp_path, network, model_file):
    from matplotlib.image import imread

    from sparseforge.run_report import write_report

    compressed = sf.load_compressed(model_file)
    program = sf.compile(compressed, pes=4)
    html = write_report(tmp_path / "report", compressed=compressed, program=program,
                        inputs=np.random.default_rng(2).normal(size=(5, 64)))
    pages = html.read_text()
    assert "no weight had before sharing" in pages
    assert "float64 NumPy" in pages
    for png in (tmp_path / "report").glob("*.png"):
        assert imread(png).shape[0] > 100
    assert leftovers(tmp_path) == []
    # No RTL simulation: the cycles in summary.json are the cycle model's, as in the table.
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    [row] = [row for row in summary["summary"] if row["label"] == "Cycles per inference"]
    assert summary["cycles_source"] == "cycle model"
    assert row["value"].startswith(f"{summary['cycles_per_inference']:.1f} predicted")
    assert 0 < summary["efficiency"] < 1
    again = write_report(tmp_path / "report", compressed=compressed, program=program)
    assert again.is_file() and leftovers(tmp_path) == []


@pytest.mark.parametrize("labels,message", [
    ([0, 10, 1], "label 10 is not a class of the model's 10 outputs"),
    ([0, -1, 1], "label -1 is not a class"),
    ([0.0, 1.5, 2.0], "labels must be integers"),
    ([0, 1], r"one class per input \(3\)"),
])
def test_8_simulate_refuses_labels_that_are_not_classes_before_it_builds(network, labels,
                                                                         message):
    program = sf.compile(network, pes=2)
    x = np.random.default_rng(2).normal(size=(3, 64))
    with pytest.raises(ValueError, match=message):
        sf.simulate(program, x, labels=labels)


@pytest.mark.parametrize("stalls", [{"input_idle": 1.0}, {"output_stall": -0.1},
                                    {"output_stall": float("nan")}, {"input_idle": "0.3"}])
def test_8_simulate_refuses_stalls_that_are_not_probabilities_below_one(network, stalls):
    # input_idle=1.0 never let an input through: the simulation ran forever.
    program = sf.compile(network, pes=2)
    x = np.random.default_rng(2).normal(size=(3, 64))
    name = next(iter(stalls))
    with pytest.raises(UserError, match=f"{name} is the probability of a stalled cycle"):
        sf.simulate(program, x, **stalls)


def test_10_inputs_a_shared_format_rounds_away_are_warned_of(capsys):
    import warnings

    import torch

    from sparseforge.cli import _show_warning
    from sparseforge.compiler.compress.quantize import inputs_lost
    from sparseforge.compiler.errors import InputWarning

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1000, (64, 1)), rng.normal(0, 1, (64, 3))], axis=1)
    lost, input_format = inputs_lost(x, 8)
    assert lost.tolist() == [1, 2, 3] and input_format.scale > 8
    assert inputs_lost(x / x.std(axis=0), 8)[0].tolist() == []      # standardized
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    y = rng.integers(0, 3, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sf.compress(model, (x, y), sparsity=0.5, prune_epochs=1, final_epochs=1,
                    share_epochs=1, prune_steps=1)
    [warning] = [w for w in caught if w.category is InputWarning]
    assert "3 of the 4 input features (1, 2, 3) round to 0 in every training sample" in \
        str(warning.message)
    _show_warning(warning.message, InputWarning, "api.py", 1)
    assert capsys.readouterr().err.startswith("warning: 3 of the 4 input features")


@pytest.mark.parametrize("change,options,message", [
    (None, {"levels": 2}, "a codebook of 2 levels holds 0 and one value"),
    (lambda layer: layer.weight.mul_(1e-4), {},
     "layer 0's weights are small (median |w| "),
])
def test_10_settings_that_wreck_accuracy_quietly_are_warned_of(change, options, message):
    import warnings

    import torch

    from sparseforge.compiler.errors import InputWarning

    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (64, 4)), rng.integers(0, 3, 64)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    if change is not None:
        with torch.no_grad():
            change(model[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sf.compress(model, (x, y), sparsity=0.5, prune_epochs=1, final_epochs=1,
                    share_epochs=1, prune_steps=1, **options)
    assert [str(w.message)[:len(message)] for w in caught if w.category is InputWarning] \
        == [message]


def test_7_maps_in_another_layout_are_refused_not_flattened():
    # Channels-last images have as many values per row as the model's maps: flattened they
    # gave wrong answers without a word.
    from tests.conv_models import random_conv_network

    rng = np.random.default_rng(7)
    network = random_conv_network(rng, max_size=8, max_layers=1)
    while network.input_map_shape[0] in network.input_map_shape[1:]:
        network = random_conv_network(rng, max_size=8, max_layers=1)
    program = sf.compile(network, pes=2)
    channels, rows, columns = network.input_map_shape
    maps = rng.normal(size=(3, channels, rows, columns))
    flat = sf.reference(program, maps.reshape(3, -1))
    np.testing.assert_array_equal(sf.reference(program, maps), flat)
    with pytest.raises(UserError, match=r"channels last\? x.transpose\(0, 3, 1, 2\)"):
        sf.reference(program, maps.transpose(0, 2, 3, 1))


def test_12_the_report_refuses_another_programs_simulation(tmp_path, program_dir, capsys):
    program = load_program(program_dir)
    figures = {"simulator": "verilator", "inputs": 3, "accuracy": 1.0, "mismatches": 0,
               "cycles": {"per_layer_mean": [100.0] * program.layer_count}}
    for other, message in (({"program": "0123456789abcdef"}, "figures of another program"),
                           ({"cycles": {"per_layer_mean": [1.0] * 7}},
                            "a program of 7 layers")):
        (tmp_path / "sim.json").write_text(json.dumps({**figures, **other}))
        status, out, _ = cli(capsys, "report", program_dir, "--sim", tmp_path / "sim.json",
                             "-o", tmp_path / "report", "--json")
        assert status == 2 and message in json_error(out)
    assert program.digest() != sf.compile(program.network, pes=program.config.pes + 1).digest()


def test_2_run_refuses_a_board_whose_engine_is_another(program_dir):
    # The board's INFO names its engine's structure; an image laid out for other widths
    # would load and answer nonsense (and a PE count that differed raised a TypeError).
    from sparseforge.boards.device import DeviceInfo, EngineMismatch
    from sparseforge.boards.program_run import run_program

    program = load_program(program_dir)
    config = program.config

    class Board:
        def __init__(self, **changes):
            self.fields = dict(engine_id=0, pes=config.pes, act_bits=config.act_bits,
                               code_bits=config.code_bits, scan_lanes=config.scan_lanes,
                               layer_count=0, max_payload=255, busy=False, session=0,
                               image=0) | changes

        def info(self):
            return DeviceInfo(**self.fields)

    for changes, named in (({"pes": config.pes * 2}, "PEs"),
                           ({"act_bits": 4}, "activation bits 4"),
                           ({"code_bits": config.code_bits + 1}, "code bits")):
        with pytest.raises(EngineMismatch, match=f"not the one this program was compiled "
                                                 f"for: {named}"):
            run_program(Board(**changes), program, np.zeros((1, 64)), load=True)


@pytest.mark.parametrize("verb", ["demo", "sweep"])
def test_7_an_output_folder_that_is_a_file_is_refused(tmp_path, capsys, verb):
    (tmp_path / "afile").write_text("mine")
    extra = ["--skip-build"] if verb == "demo" else ["--pes", "4"]
    status, out, err = cli(capsys, verb, "--out", tmp_path / "afile", *extra, "--json")
    assert status == 2 and "afile exists and is not a folder" in json_error(out)
    assert "Traceback" not in err and (tmp_path / "afile").read_text() == "mine"


def test_3_a_line_that_echoes_the_request_is_named_not_taken_for_a_reply():
    # A TX-RX loopback sent INFO (opcode 1) back, read as status 1, "a damaged request".
    import time

    from sparseforge.boards.device import Device

    class Echo:
        byte_seconds = 1e-6

        def __init__(self):
            self.pending = b""

        def write(self, data):
            self.pending += data

        def read(self, timeout):
            data, self.pending = self.pending, b""
            return data

        def clock(self):
            return time.monotonic()

    device = Device(Echo(), retries=2, timeout=0.05)
    with pytest.raises(LinkError, match="INFO: the line sends back what the host sends"):
        device.info()
    assert device.retried == 0


def test_8_whole_number_labels_stored_as_floats_are_taken_as_classes():
    # As compress --data takes them (a CSV's labels are floats); 2.5 is not a class.
    from sparseforge.commands.common import check_labels
    from sparseforge.sim.simulate import checked_labels

    labels = np.array([[1.0], [0.0], [9.0]])
    for taken in (check_labels(labels, 3, 10, "y.npy"), checked_labels(labels, 3, 10)):
        assert taken.dtype.kind == "i" and taken.tolist() == [1, 0, 9]
    with pytest.raises(ValueError, match="labels must be integers"):
        checked_labels(np.array([1.0, np.nan, 2.0]), 3, 10)


def test_7_a_failure_after_load_says_the_board_may_hold_a_smaller_engine(
        tmp_path, program_dir, capsys, monkeypatch):
    """run --load of a program larger than the flashed engine (whose depths INFO does not
    report) loaded, and then failed with the link's or the device's text alone."""
    from sparseforge.boards import device, program_run

    def fails(*_, **__):
        raise device.DeviceError(protocol.Opcode.INFER, protocol.Status.BAD_LENGTH)

    monkeypatch.setattr(device, "SerialTransport", lambda port, baud: None)
    monkeypatch.setattr(program_run, "run_program", fails)
    np.save(tmp_path / "x.npy", np.zeros((3, 64)))
    command = ("run", program_dir, "--input", tmp_path / "x.npy", "--port", tmp_path / "tty")
    status, out, _ = cli(capsys, *command, "--load", "--json")
    assert status == 2 and "INFER failed on the device: BAD_LENGTH" in json_error(out)
    assert "; with --load, a program whose memories are larger than the flashed engine's" \
        in json_error(out)
    status, out, _ = cli(capsys, *command, "--json")
    assert status == 2 and "--load" not in json_error(out)


def test_4_an_interrupted_verb_is_not_followed_by_amaranths_unused_warnings(monkeypatch,
                                                                           capsys):
    """Ctrl-C in compile printed 46 UnusedElaboratable warnings (the components it had built)
    after "interrupted"."""
    import gc
    import warnings

    from amaranth.hdl import Fragment, Module

    from sparseforge.commands import compile as compile_verb

    def interrupted(args):
        Fragment.get(Module(), None)   # elaboration began (Amaranth warns from then on)
        Module()                       # built and never used, as a cut-short elaboration's
        raise KeyboardInterrupt

    monkeypatch.setattr(compile_verb, "run", interrupted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["compile", "m.sfm"]) == 130
        gc.collect()
    assert "interrupted" in capsys.readouterr().err
    assert not [w for w in caught if "never used" in str(w.message)]


def test_4_what_a_killed_compile_left_is_removed_by_the_next(tmp_path, network):
    """SIGKILL runs no cleanup: its staging folder stayed beside the program for good."""
    import os
    import time

    from sparseforge.compiler.outputs import ABANDONED_AFTER_SECONDS

    program = sf.compile(network, pes=4)
    killed = tmp_path / ".prog.0123456789abcdef0123456789abcdef.tmp"
    killed.mkdir()
    (killed / "image.npz").write_bytes(b"half")
    live = tmp_path / ".prog.fedcba9876543210fedcba9876543210.tmp"    # another writer's, now
    live.mkdir()
    old = time.time() - ABANDONED_AFTER_SECONDS - 60
    os.utime(killed, (old, old))
    program.save(tmp_path / "prog")
    assert not killed.exists() and live.exists()
