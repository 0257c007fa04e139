"""Distributed helpers in one process: what they do outside a process group, SyncBatchNorm conversion, refusals."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tfclip_plugin import distributed, host
from tfclip_plugin.config import get_default_config
from tfclip_plugin.engine.losses import CrossRankTripletLoss
from tfclip_plugin.engine.mixins import DistributedMixin
from tfclip_plugin.models import build_tfclip


def tiny_tfclip():
    torch.manual_seed(0)
    return build_tfclip("tfclip_vit", 5, 2, height=64, width=32, vision_width=64, vision_layers=2, embed_dim=64)


def test_outside_a_process_group_everything_is_local(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_environment() is False
    with distributed.process_group() as grouped:
        assert grouped is False and distributed.world_size() == 1 and distributed.is_main_process()
    calls = []

    def compute(block):
        calls.append(block)
        return torch.arange(len(block)), np.arange(len(block)) * 2

    features, doubled = distributed.gather_shards(compute, 5)
    assert calls == [range(5)] and features.tolist() == [0, 1, 2, 3, 4] and doubled.tolist() == [0, 2, 4, 6, 8]
    assert distributed.main_process_value(lambda: "rank 0's") == "rank 0's"
    engine = DistributedMixin()
    engine.cfg, engine.training_model, engine.writer = get_default_config(), "model", None
    engine.prepare_distributed()
    assert (engine.training_model, engine.writer) == ("model", None)


def test_shard_loader_keeps_order_batch_size_and_the_whole_loader():
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3)
    assert distributed.shard_loader(loader, range(10)) is loader
    block = distributed.shard_loader(loader, distributed.shard_range(10, 1, 3))
    assert [batch[0].tolist() for batch in block] == [[4, 5, 6]]
    block = distributed.shard_loader(loader, distributed.shard_range(10, 0, 2))
    assert [batch[0].tolist() for batch in block] == [[0, 1, 2], [3, 4]]


def test_cross_rank_triplet_is_the_wrapped_loss_in_one_process():
    features, pids = torch.randn(8, 6), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    triplet = host.TripletLoss(margin=0.3)
    assert CrossRankTripletLoss(triplet)(features, pids) == triplet(features, pids)


def test_sync_bn_converts_the_bnnecks_and_keeps_their_parameters():
    model = tiny_tfclip()
    before = {name: param for name, param in model.named_parameters()}
    state_keys = list(model.state_dict())
    model.eval()
    clips = torch.randn(2, 3, 3, 64, 32)
    expected = model(clips, torch.tensor([0, 1]))
    names = distributed.convert_bnnecks_to_sync_bn(model)
    assert names == ["bottleneck", "bottleneck_proj", "bottleneck_proj_temp2", "bottleneck_proj_temp"]
    assert all(type(getattr(model, name)) is torch.nn.SyncBatchNorm for name in names)
    assert all(param is before[name] for name, param in model.named_parameters())  # the optimizer's tensors
    assert not model.bottleneck.bias.requires_grad and model.bottleneck.weight.requires_grad
    assert list(model.state_dict()) == state_keys  # checkpoints load either way
    torch.testing.assert_close(model(clips, torch.tensor([0, 1])), expected, rtol=0, atol=0)
    model.train()
    output = model(clips, torch.tensor([0, 1]))  # one process: plain batch norm
    assert output.logits[0].shape == (2, 5)


def test_unknown_train_sampler_is_refused_with_the_known_ones():
    loader = DataLoader(TensorDataset(torch.arange(4)), batch_size=2)
    with pytest.raises(ValueError, match=r"sampler.train_sampler must be one of RandomIdentitySampler, "
                                         r"RandomSampler under torchrun; got 'RandomCameraSampler'"):
        distributed.distributed_train_loader(loader, "RandomCameraSampler", 16, 4, seed=0)


def test_null_writer_answers_what_the_engine_asks():
    writer = distributed.NullSummaryWriter("log/run")
    writer.add_scalar("Train/loss", 1.0, 0)
    writer.close()
    assert writer.get_logdir() == "log/run" and vars(writer) == {"log_dir": "log/run"}
