"""The program: compile, save/load round trips, atomic saving, and bad images refused with the
field named."""

import hashlib
import json
import types

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler import isa
from sparseforge.compiler import program as program_module
from sparseforge.compiler.configure import DoesNotFit, derive_config
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.program import ProgramError, load_program
from sparseforge.sim.reference.golden import reference
from tests.test_golden import random_inputs, random_network


@pytest.fixture(scope="module")
def network():
    return random_network(np.random.default_rng(21), [30, 50, 10], density=0.2)


@pytest.fixture(scope="module")
def program(network):
    # Its dead hidden units kept (compiler/dead_units.py): the tests below name its shapes.
    return sf.compile(network, pes=4, remove_dead=False)


def test_compile_accepts_a_compressed_model_or_a_network(network, program):
    via_wrapper = sf.compile(types.SimpleNamespace(network=network), pes=4, remove_dead=False)
    assert via_wrapper.config == program.config
    # The network itself, or (compiler/balance.py) one whose hidden rows are permuted.
    assert program.layer_count == 2
    assert sf.compile(network, pes=4, balance=False, remove_dead=False).network is network
    x = np.random.default_rng(0).integers(-128, 128, (16, 30))
    assert np.array_equal(program.network.forward(x), network.forward(x))
    assert (program.in_features, program.out_features) == (30, 10)
    assert sf.compile(network).config.pes == 8


def test_compile_errors(network, program):
    with pytest.raises(TypeError, match=r"sf.compile takes a compressed model, not a path: "
                                        r"sf.load_compressed\('model.sfm'\) reads"):
        sf.compile("model.sfm")
    with pytest.raises(ValueError, match="pes must be between 1 and 64, not 65"):
        sf.compile(network, pes=65)
    with pytest.raises(ValueError, match="pes=2 contradicts the given engine's 4 PEs"):
        sf.compile(network, pes=2, config=program.config)
    # Options that shape a new engine do not apply to a given one: said, not ignored.
    with pytest.raises(ValueError, match="scan_lanes=1, headroom=2.0 cannot change the "
                                         "given engine"):
        sf.compile(network, config=program.config, scan_lanes=1, headroom=2.0)
    same = sf.compile(network, config=program.config, scan_lanes=program.config.scan_lanes)
    assert same.config is program.config


def test_a_new_model_loads_into_an_existing_engine(network):
    engine = derive_config(network, 4, headroom=1.0)
    other = random_network(np.random.default_rng(22), [30, 50, 10], density=0.3)
    fitted = sf.compile(other, config=engine)
    assert fitted.config is engine
    x = random_inputs(np.random.default_rng(1), other, 5)
    np.testing.assert_array_equal(reference(fitted, x, integer=True), other.forward(x))
    big = random_network(np.random.default_rng(23), [30, 50, 10], density=1.0)
    with pytest.raises(DoesNotFit, match="entry_depth: the model needs"):
        sf.compile(big, config=engine)


def test_dequantize_and_quantize_input(program, network):
    out = np.array([[1, -2] + [0] * 8])
    np.testing.assert_array_equal(program.dequantize(out),
                                  out * 2.0 ** -network.output_format.frac)
    np.testing.assert_array_equal(program.quantize_input(np.zeros((2, 5, 6))),
                                  np.zeros((2, 30)))


def test_save_load_round_trip(tmp_path, program):
    directory = program.save(tmp_path / "prog")
    assert sorted(p.name for p in directory.iterdir()) == sorted(program_module.PROGRAM_FILES)
    manifest = json.loads((directory / "program.json").read_text())
    assert (manifest["format"], manifest["version"]) == ("sparseforge-program", 1)
    assert json.loads((directory / "engine.json").read_text())["pes"] == 4
    loaded = load_program(directory)
    assert loaded.config == program.config
    for name in ("entries", "pointers", "biases"):
        for a, b in zip(getattr(loaded.image, name), getattr(program.image, name)):
            np.testing.assert_array_equal(a, b)
    assert list(loaded.image.occupancy) == list(program.image.occupancy)
    assert list(loaded.image.descriptors) == list(program.image.descriptors)
    np.testing.assert_array_equal(loaded.image.bus_writes(), program.image.bus_writes())
    x = random_inputs(np.random.default_rng(2), program.network, 20)
    np.testing.assert_array_equal(reference(loaded, x, integer=True),
                                  reference(program, x, integer=True))
    with np.load(directory / "image.npz", allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)


def test_saving_over_a_program_replaces_the_whole_folder(tmp_path, program, network):
    directory = program.save(tmp_path / "prog")
    (directory / "engine.v").write_text("// the earlier program's\n")
    other = sf.compile(random_network(np.random.default_rng(5), [30, 8], density=0.5), pes=4)
    other.save(directory)
    assert not (directory / "engine.v").exists()          # it was another program's
    assert load_program(directory).layer_count == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog"]      # no temporary folder


def test_a_file_of_another_save_is_refused(tmp_path, program):
    first = program.save(tmp_path / "a", extra=lambda f: (f / "engine.v").write_text("// a\n"))
    other = sf.compile(random_network(np.random.default_rng(5), [30, 8], density=0.5), pes=4)
    second = other.save(tmp_path / "b")
    (first / "engine.json").write_bytes((second / "engine.json").read_bytes())
    with pytest.raises(ProgramError, match="a/engine.json is not the file this program was "
                                           "saved with"):
        load_program(first)
    (tmp_path / "a" / "engine.json").unlink()
    program.save(first, extra=lambda f: (f / "engine.v").write_text("// a\n"))
    (first / "engine.v").write_text("// another run's\n")
    with pytest.raises(ProgramError, match="engine.v is not the file"):
        load_program(first)


def test_saving_refuses_what_is_not_a_program_folder(tmp_path, program):
    (tmp_path / "file").write_text("x")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "home")
    for name, message in (("file", "exists and is not a folder"),
                          ("home", "does not hold a program: refusing to replace it"),
                          ("link", "is a symbolic link: refusing")):
        with pytest.raises(InputError, match=message):
            program.save(tmp_path / name)
    assert (tmp_path / "home" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "home", "link"]


def test_a_failed_save_leaves_nothing_half_written(tmp_path, program, monkeypatch):
    def broken(path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(program_module.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        program.save(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    monkeypatch.undo()

    directory = program.save(tmp_path / "prog")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    monkeypatch.setattr(program_module.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        program.save(directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    monkeypatch.undo()
    assert load_program(directory).config == program.config


# ---- bad programs ----------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path, program):
    """A saved program whose manifest lists no file hashes (as an earlier sparseforge wrote
    it), so that the field checks below are reached after a file is rewritten."""
    directory = program.save(tmp_path / "prog")
    manifest = json.loads((directory / "program.json").read_text())
    del manifest["files"]
    (directory / "program.json").write_text(json.dumps(manifest))
    return directory


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def image_array(directory, key):
    with np.load(directory / "image.npz", allow_pickle=False) as loaded:
        return loaded[key].copy()


def test_not_a_program(tmp_path):
    with pytest.raises(ProgramError, match="is not a compiled program \\(no program.json\\)"):
        load_program(tmp_path)


def test_wrong_format_version(saved):
    manifest = json.loads((saved / "program.json").read_text())
    manifest["version"] = 99
    (saved / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match="format version 99 is not supported \\(this "
                                           "sparseforge reads version 1\\)"):
        load_program(saved)


def test_bad_engine_json(saved):
    engine = json.loads((saved / "engine.json").read_text())
    engine["pes"] = 0
    (saved / "engine.json").write_text(json.dumps(engine))
    with pytest.raises(ProgramError, match="engine.json: pes must be between 1 and 64, not 0"):
        load_program(saved)


def test_truncated_image_file(saved):
    data = (saved / "image.npz").read_bytes()
    (saved / "image.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ProgramError, match="image.npz cannot be read \\(truncated, not .npz"):
        load_program(saved)


def test_pickled_objects_are_refused(saved):
    rewrite(saved / "image.npz", codebook=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ProgramError, match="image.npz cannot be read .*pickled objects"):
        load_program(saved)


def test_missing_array(saved):
    rewrite(saved / "image.npz", pointers_3=None)
    with pytest.raises(ProgramError, match="image.npz lacks the array 'pointers_3'"):
        load_program(saved)


def test_wrong_shape(saved):
    pointers = image_array(saved, "pointers_1")
    rewrite(saved / "image.npz", pointers_1=pointers[:-2])
    expected = len(pointers)
    with pytest.raises(ProgramError, match=f"pointers_1 has shape \\({expected - 2},\\), "
                                           f"expected \\({expected},\\)"):
        load_program(saved)


def test_non_monotone_pointers(saved):
    pointers = image_array(saved, "pointers_2")
    position = int(np.argmax(np.diff(pointers) > 0)) + 1       # a pointer after a step up
    pointers[position] = pointers[position - 1] - 1
    rewrite(saved / "image.npz", pointers_2=pointers)
    with pytest.raises(ProgramError, match=f"pointers_2 decrease at index {position}"):
        load_program(saved)


def test_pointer_beyond_the_entries(saved, program):
    pointers = image_array(saved, "pointers_0")
    pointers[-1] += 5
    rewrite(saved / "image.npz", pointers_0=pointers)
    with pytest.raises(ProgramError, match="pointers_0 reach .*beyond its .* entries"):
        load_program(saved)


def test_entry_wider_than_its_fields(saved, program):
    entries = image_array(saved, "entries_0")
    bits = isa.entry_layout(program.config).size
    entries[3] = 1 << bits
    rewrite(saved / "image.npz", entries_0=entries)
    with pytest.raises(ProgramError, match=f"entries_0\\[3\\] = {1 << bits} does not fit a "
                                           f"{bits}-bit entry"):
        load_program(saved)


def test_malformed_padding_entry(saved, program):
    entries = image_array(saved, "entries_1")
    entries[0] = isa.pack(isa.entry_layout(program.config), zero_run=[3], code=[0])[0]
    rewrite(saved / "image.npz", entries_1=entries)
    with pytest.raises(ProgramError, match="entries_1\\[0\\] has code 0 and zero_run 3; a "
                                           "padding entry's zero_run is 15"):
        load_program(saved)


def test_entry_that_does_not_encode_the_network(saved, program):
    entries = image_array(saved, "entries_0")
    layout = isa.entry_layout(program.config)
    fields = isa.unpack(layout, entries[:1])
    code = int(fields["code"][0])
    entries[0] = isa.pack(layout, zero_run=fields["zero_run"], code=[code % 3 + 1])[0]
    rewrite(saved / "image.npz", entries_0=entries)
    with pytest.raises(ProgramError, match="layer 0 \\(fc0\\) decodes to code .* the network "
                                           "has"):
        load_program(saved)


def test_entry_landing_outside_the_rows(saved, program):
    entries = image_array(saved, "entries_0")
    layout = isa.entry_layout(program.config)
    last = image_array(saved, "pointers_0")[30] - 1           # layer 0's last entry (PE 0)
    fields = isa.unpack(layout, entries[last:last + 1])
    entries[last] = isa.pack(layout, zero_run=[15], code=fields["code"])[0]
    rewrite(saved / "image.npz", entries_0=entries)
    with pytest.raises(ProgramError, match="layer 0 \\(fc0\\): entry \\d+ \\(column 29\\) lands "
                                           "on local row \\d+, beyond the PE's 13 rows"):
        load_program(saved)


def test_out_of_range_codebook_value(saved, program):
    codebook = image_array(saved, "codebook")
    codebook[0, 1] = 1000
    rewrite(saved / "image.npz", codebook=codebook)
    with pytest.raises(ProgramError, match="codebook values .* 1000 exceed 8 bits"):
        load_program(saved)


def test_out_of_range_code_in_the_network(saved):
    rewrite(saved / "network.npz", codes_1=np.full((10, 50), 200, dtype=np.uint8))
    with pytest.raises(ProgramError, match="network.npz: layer fc1: code 200 is out of range "
                                           "for 4-bit codes"):
        load_program(saved)


def test_nan_in_the_network(saved):
    rewrite(saved / "network.npz", codebook_0=np.full(16, np.nan))
    with pytest.raises(ProgramError, match="network.npz: codebook_0 holds NaN or infinite "
                                           "values"):
        load_program(saved)


def test_float_array_where_integers_belong(saved):
    rewrite(saved / "image.npz", biases_0=image_array(saved, "biases_0").astype(np.float64))
    with pytest.raises(ProgramError, match="biases_0 must hold integers, not float64"):
        load_program(saved)


def test_descriptor_that_differs_from_the_network(saved, program):
    descriptors = image_array(saved, "descriptors")
    descriptors[1, 0] ^= 1                                        # in_features of layer 1
    rewrite(saved / "image.npz", descriptors=descriptors)
    with pytest.raises(ProgramError, match="descriptors differs from the network's encoding "
                                           "at flat index 1"):
        load_program(saved)


def test_model_that_no_longer_fits_the_engine(saved):
    engine = json.loads((saved / "engine.json").read_text())
    engine["entry_depth"] = 3
    (saved / "engine.json").write_text(json.dumps(engine))
    with pytest.raises(ProgramError, match="the model does not fit this engine:\n  "
                                           "entry_depth: the model needs \\d+, the engine has 3"):
        load_program(saved)


def test_a_program_as_saved_that_this_sparseforge_lays_out_otherwise_is_to_be_recompiled(
        tmp_path, program):
    # As a conv program of three layers compiled before its output moved to activation 0:
    # the files are as saved, the engine it asks for is smaller than this compiler's layout.
    directory = program.save(tmp_path / "prog")
    engine = json.loads((directory / "engine.json").read_text())
    engine["entry_depth"] = 3
    (directory / "engine.json").write_text(json.dumps(engine))
    manifest = json.loads((directory / "program.json").read_text())
    manifest["files"]["engine.json"] = hashlib.sha256(
        (directory / "engine.json").read_bytes()).hexdigest()
    del manifest["manifest_sha256"]                 # an earlier sparseforge wrote none
    (directory / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError) as raised:
        load_program(directory)
    assert "entry_depth: the model needs" in str(raised.value)
    # It said only that the model does not fit, as if the user had chosen the engine.
    assert (f"{directory} is as it was saved, so an earlier sparseforge compiled it: compile "
            f"the model again (sparseforge compile MODEL.sfm -o {directory})"
            in str(raised.value))


def test_an_edited_program_json_is_told_from_an_earlier_sparseforges(tmp_path, program):
    # A layer's ReLU flipped in program.json: "an earlier sparseforge compiled it", it said.
    directory = program.save(tmp_path / "prog")
    manifest = json.loads((directory / "program.json").read_text())
    manifest["layers"][0]["relu"] = not manifest["layers"][0]["relu"]
    (directory / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match=r"program.json was edited after it was saved \(its "
                                           r"digest differs\): compile the model again"):
        load_program(directory)
