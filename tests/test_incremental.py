"""Incremental FNO/SFNO modes: a partially active layer is the smaller layer, a grown model
is the fixed-modes model, the optimizer state survives growth, the rules fire when they
should, checkpoints resume the modes, bad schedules are clear errors."""
from __future__ import annotations

import pytest
import torch
from _helpers import dist_env, free_port
from _train_models import make_samples

from geoop.errors import ConfigError
from geoop.models import GINO
from geoop.models.config import FNOSpec, IncrementalSpec, SFNOSpec
from geoop.nn.fno import FNOBlocks, SpectralConv
from geoop.nn.incremental import active_modes, explained_energy, grow_modes, incremental_blocks, shell_energy
from geoop.train import Trainer
from geoop.train.incremental import IncrementalModes


def _freq_positions(a, m):
    """Positions in the (2m_1, .., m_d) block of the frequencies of the (2a_1, .., a_d) block,
    from the frequencies themselves (k = i for i < a, i - 2a above; stored at k mod 2m)."""
    out = []
    for j, (aj, mj) in enumerate(zip(a, m)):
        if j == len(a) - 1:
            out.append(list(range(aj)))
        else:
            ks = [i if i < aj else i - 2 * aj for i in range(2 * aj)]
            out.append([k % (2 * mj) for k in ks])
    return out


def _gather(w, pos):
    for j, p in enumerate(pos):
        w = w.index_select(2 + j, torch.tensor(p))
    return w


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_active_modes_are_the_layer_built_at_those_modes(dim):
    torch.manual_seed(dim)
    m, a = (6, 5, 4)[:dim], (3, 2, 4)[:dim]
    small = SpectralConv(3, 4, a).double()
    big = SpectralConv(3, 4, m, active_modes=a).double()
    pos = _freq_positions(a, m)
    with torch.no_grad():  # small's weights at their frequencies inside big's block; random elsewhere
        full = torch.view_as_complex(big.weight.dense)
        grid = torch.meshgrid(*[torch.tensor(p) for p in pos], indexing="ij")
        full[(slice(None), slice(None), *grid)] = torch.view_as_complex(small.weight.dense)
        big.bias.copy_(small.bias)
    x = torch.randn(2, 3, *[12] * dim, dtype=torch.double)
    assert torch.allclose(big(x), small(x), atol=1e-12, rtol=0)
    big.set_active_modes(m)  # all modes: the unused weights now matter
    assert not torch.allclose(big(x), small(x), atol=1e-6)


@pytest.mark.parametrize("fac", ["tucker", "cp"])
def test_factorised_active_modes_use_the_sub_block(fac):
    torch.manual_seed(0)
    m, a = (5, 4), (2, 3)
    big = SpectralConv(3, 4, m, fac, active_modes=a).double()
    ref = SpectralConv(3, 4, a).double()
    with torch.no_grad():
        ref.weight.dense.copy_(torch.view_as_real(_gather(big.weight(), _freq_positions(a, m))))
        ref.bias.copy_(big.bias)
    x = torch.randn(2, 3, 10, 9, dtype=torch.double)
    assert torch.allclose(big(x), ref(x), atol=1e-12, rtol=0)


def test_sfno_active_degrees_are_the_layer_with_that_lmax():
    pytest.importorskip("torch_harmonics")
    from geoop.nn.sfno import SphericalConv

    torch.manual_seed(0)
    big = SphericalConv(3, 4, 16, 32, active_lmax=3).double()
    small = SphericalConv(3, 4, 16, 32, lmax=3).double()
    with torch.no_grad():
        small.weight.dense.copy_(big.weight.dense[..., :3])
        small.bias.copy_(big.bias)
    x = torch.randn(2, 3, 16, 32, dtype=torch.double)
    assert torch.allclose(big(x), small(x), atol=1e-12, rtol=0)


def _gino(incremental=None, latent=(8, 8), modes=4, seed=0, **blocks):
    torch.manual_seed(seed)
    blk = {"width": 8, "modes": modes, "layers": 2, **blocks}
    if incremental is not None:
        blk["incremental"] = incremental
    return GINO(1, 1, coord_dim=2, latent={"shape": list(latent)}, blocks=blk,
                encoder={"radius": 0.3, "mlp": [8]}, decoder={"radius": 0.3, "mlp": [8]})


def _batch():
    from geoop.batch import collate

    return collate(make_samples(2, seed=3))


def test_grown_model_equals_model_built_at_final_modes():
    inc = _gino({"start": [1, 2]}, modes=[3, 4])
    assert active_modes(inc) == (1, 2)
    assert grow_modes(inc, 1) == (2, 3) and grow_modes(inc, 5) == (3, 4)  # capped at the final modes
    fixed = _gino(None, modes=[3, 4], seed=1)
    state = inc.state_dict()
    buffers = sorted(k for k in state if k.endswith("modes_active"))
    assert len(buffers) == 2 and set(state) - set(buffers) == set(fixed.state_dict())
    fixed.load_state_dict({k: v for k, v in state.items() if k not in buffers})
    b = _batch()
    x = b.fields["a"]
    assert torch.allclose(inc(b, x), fixed(b, x), atol=1e-6, rtol=0)


def test_growth_keeps_the_optimizer_state_of_the_kept_modes():
    torch.manual_seed(0)
    blocks = FNOBlocks(4, (4, 3), n_layers=1, active_modes=(2, 1)).double()
    conv = blocks.blocks[0].spectral
    opt = torch.optim.AdamW(blocks.parameters(), lr=1e-2, weight_decay=0.0)
    w0 = conv.weight.dense.detach().clone()
    x = torch.randn(2, 4, 8, 8, dtype=torch.double)
    for _ in range(3):
        opt.zero_grad()
        blocks(x).square().mean().backward()
        opt.step()
    w = conv.weight.dense
    active = torch.zeros(w.shape[:-1], dtype=torch.bool)
    active[:, :, [0, 1, 6, 7], :1] = True  # k_1 in {0, 1, -2, -1}, k_2 = 0
    st = opt.state[w]
    assert torch.equal(w.detach()[~active], w0[~active])  # unused modes: no gradient, no update
    v = st["exp_avg_sq"].sum(-1)  # (re, im) together: the imaginary part of k = 0 gets no gradient
    assert (v[active] > 0).all() and (v[~active] == 0).all()
    m1, v1 = st["exp_avg"].clone(), st["exp_avg_sq"].clone()
    blocks.set_active_modes((4, 3))
    assert opt.state[w]["exp_avg"] is st["exp_avg"] and torch.equal(st["exp_avg"], m1) and torch.equal(st["exp_avg_sq"], v1)
    opt.zero_grad()
    blocks(x).square().mean().backward()
    opt.step()
    assert (st["exp_avg_sq"].sum(-1)[~active] > 0).all()  # the new modes now learn


def test_shell_energy_known_answer_and_energy_rule():
    conv = SpectralConv(1, 1, (4, 4), active_modes=(3, 3))
    with torch.no_grad():
        conv.weight.dense.zero_()
        conv.weight.dense[0, 0, 0, 0, 0] = 2.0  # k = (0, 0): shell 0
        conv.weight.dense[0, 0, 8 - 2, 1] = torch.tensor([3.0, 4.0])  # k = (-2, 1): shell 1, |w|^2 = 25
        conv.weight.dense[0, 0, 8 - 3, 0, 1] = 1.0  # k = (-3, 0): shell 2 (the third mode of the negative corner)
        conv.weight.dense[0, 0, 3, 3, 0] = 100.0  # k = (3, 3): not active
    assert torch.equal(shell_energy(conv), torch.tensor([4.0, 25.0, 1.0], dtype=torch.float64))
    blocks = FNOBlocks(2, (4, 4), n_layers=1, active_modes=2)
    model = torch.nn.Sequential(blocks)
    spec = {"rule": "energy", "threshold": 0.9, "buffer": 1}
    rule = IncrementalModes(model, spec)
    with torch.no_grad():  # all energy in shell 0: explained, no growth
        blocks.blocks[0].spectral.weight.dense.zero_()
        blocks.blocks[0].spectral.weight.dense[:, :, 0, 0] = 1.0
    assert explained_energy(model) == 1.0 and not rule.update(0.5) and active_modes(model) == (2, 2)
    with torch.no_grad():  # energy in the outer shell (k_1 = -1): grow
        blocks.blocks[0].spectral.weight.dense[:, :, 7, 1] = 1.0
    assert explained_energy(model) < 0.9 and rule.update(0.5) and active_modes(model) == (3, 3)


def test_loss_plateau_rule():
    model = torch.nn.Sequential(FNOBlocks(2, (3,), n_layers=1, active_modes=1))
    rule = IncrementalModes(model, {"rule": "loss_plateau", "eps": 0.01, "patience": 2})
    grew = [rule.update(v) for v in (1.0, 0.5, 0.495, 0.49, 0.3, 0.299, 0.2985, 0.2, 0.1, 0.1, 0.1, 0.1)]
    # plateau = two improvements < 0.01 in a row, counted from the last growth; capped at 3 modes
    assert grew == [False, False, False, True, False, False, True, False, False, False, False, False]
    assert active_modes(model) == (3,) and rule.done


def _trainer(tmp, model, epochs, **kw):
    samples = make_samples(4, seed=1)
    return Trainer(model, samples[:3], val_data=samples[3:], targets=["p"], inputs=["a"], epochs=epochs, lr=3e-3,
                   out_dir=tmp, progress=False, seed=0, **kw)


def test_trainer_grows_records_and_resumes_the_modes(tmp_path):
    inc = {"start": 1, "rule": "energy", "threshold": 1.0}  # the outer shell always holds energy: grow each epoch
    full = _trainer(tmp_path / "a", _gino(inc, modes=3), epochs=3)
    hist = full.fit()
    assert [h["modes"] for h in hist] == [[1, 1], [2, 2], [3, 3]] and active_modes(full.model) == (3, 3)
    part = _trainer(tmp_path / "b", _gino(inc, modes=3), epochs=3)
    part.fit(until_epoch=2)
    again = _trainer(tmp_path / "b", _gino(inc, modes=3, seed=5), epochs=3)
    assert active_modes(again.model) == (1, 1)
    again.fit(resume=tmp_path / "b" / "last.pt")  # the checkpoint holds the modes grown after epoch 2: (3, 3)
    assert again.incremental.grown_at == [1, 2]  # and none after epoch 3: the final modes were reached
    assert [h["modes"] for h in again.history] == [[1, 1], [2, 2], [3, 3]]
    for (k, v), w in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-12), k
    from geoop.train.run import load_trained  # geoop evaluate / predict: the checkpoint's modes

    assert active_modes(load_trained(tmp_path / "b" / "last.pt").model) == (3, 3)


def test_incremental_config_and_bad_schedules():
    s = FNOSpec.from_dict({"modes": [8, 6], "incremental": {"start": 2, "rule": "energy"}})
    assert s.incremental["start"] == 2 and FNOSpec.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match=r"incremental.start \[8, 8\] exceeds the final modes blocks.modes = \[8, 6\]"):
        FNOSpec(modes=(8, 6), incremental={"start": 8})
    with pytest.raises(ConfigError, match="rule 'fast' is unknown"):
        FNOSpec(incremental={"rule": "fast"})
    with pytest.raises(ConfigError, match="unknown key"):
        IncrementalSpec.from_dict({"begin": 2})
    with pytest.raises(ConfigError, match=r"blocks.lmax = \[4\]"):
        SFNOSpec(lmax=4, incremental={"start": 5})
    # final modes beyond the latent grid: named, before any training
    with pytest.raises(ConfigError, match=r"blocks.modes=\[5, 5\].*at least \[10, 10\].*latent.shape is \[8, 8\]"):
        _gino({"start": 2}, modes=5)
    with pytest.raises(ConfigError, match="cuda_graphs.*incremental"):
        _trainer(None, _gino({"start": 2}), epochs=1, compile="cuda_graphs")
    assert incremental_blocks(_gino(None)) == [] and IncrementalModes.from_model(_gino(None)) is None


def _fsdp_model():
    torch.manual_seed(0)
    return GINO(in_channels=1, out_channels=1, coord_dim=2, latent=dict(shape=[8, 8]), encoder=dict(radius=0.25),
                blocks=dict(width=8, modes=3, layers=2, incremental={"start": 1, "eps": 10.0}), decoder=dict(radius=0.25))


def _fsdp_trainer(info, batch_size, fsdp):
    return Trainer(_fsdp_model(), make_samples(8), targets=["p"], inputs=["a"], epochs=3, batch_size=batch_size,
                   lr=1e-2, seed=3, dist_info=info, progress=False, fsdp=fsdp)


def _fsdp_worker(rank, world, port, out):
    import os

    from geoop.train.distributed import cleanup_distributed, init_distributed

    torch.set_num_threads(1)
    os.environ.update(dist_env(rank, world, port))
    info = init_distributed(torch.device("cpu"), timeout_s=180)
    try:
        torch.manual_seed(0)
        energy = GINO(in_channels=1, out_channels=1, coord_dim=2, latent=dict(shape=[8, 8]),
                      blocks=dict(width=8, modes=3, layers=1, incremental={"start": 1, "rule": "energy"}))
        with pytest.raises(ConfigError, match="rule 'energy'.*fsdp"):
            Trainer(energy, make_samples(8), targets=["p"], inputs=["a"], dist_info=info, progress=False, fsdp=True)
        tr = _fsdp_trainer(info, 2, True)
        assert tr.fsdp
        hist = tr.fit()
        state = tr.state_dict()  # a collective: the full state on rank 0
        if rank == 0:
            torch.save({"model": state["model"], "modes": [h["modes"] for h in hist]}, os.path.join(out, "rank0.pt"))
    finally:
        cleanup_distributed(info)


@pytest.mark.slow
def test_incremental_under_fsdp_matches_one_process(tmp_path):
    """2 gloo ranks with sharded parameters grow the modes at the same epoch as one process
    and end with its weights; the gathered checkpoint holds the grown modes."""
    import torch.multiprocessing as mp

    from geoop.train.distributed import DistInfo

    single = _fsdp_trainer(DistInfo(), 4, False)
    hist = single.fit()
    assert [h["modes"] for h in hist] == [[1, 1], [1, 1], [2, 2]]  # grown after epoch 2 (eps: any change is a plateau)
    mp.spawn(_fsdp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert r0["modes"] == [[1, 1], [1, 1], [2, 2]]
    ref = single.model.state_dict()
    assert sorted(r0["model"]) == sorted(ref)
    for k, v in ref.items():
        assert torch.allclose(r0["model"][k], v, atol=1e-5, rtol=0), k
    assert r0["model"]["blocks.blocks.0.spectral.modes_active"].tolist() == [2, 2]



def test_sphere_gino_grows_its_degrees():
    pytest.importorskip("torch_harmonics")
    torch.manual_seed(0)
    kw = dict(coord_dim=3, latent={"kind": "sphere", "shape": [8, 16]}, encoder={"radius": 0.5}, decoder={"radius": 0.5})
    model = GINO(1, 1, blocks={"width": 4, "layers": 1, "incremental": {"start": 2}}, **kw)
    assert active_modes(model) == (2,) and grow_modes(model, 10) == (4,)  # lmax = (8 + 1) // 2 on the equiangular grid
    with pytest.raises(ConfigError, match=r"incremental.start \[5\] exceeds the final modes blocks.lmax = \[4\]"):
        GINO(1, 1, blocks={"width": 4, "layers": 1, "incremental": {"start": 5}}, **kw)
