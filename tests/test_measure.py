"""The agent's measurement code on real torch ops (shared by local and ssh devices)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from devices.agent import kernels
from devices.agent.measure import measure_op
from devices.agent.stats import summarize
from profiler.zoo import model_graph

FAST = {"samples": 3, "min_sample_time": 0.0005, "warmups": 1}


@pytest.mark.parametrize("model", ["tinycnn", "mlp", "bert-tiny", "mobilenetv2"])
def test_every_distinct_op_of_zoo_models_measures(model):
    g = model_graph(model, batch=2, input_shape=(16,) if model == "bert-tiny" else None)
    for spec in g.distinct_specs():
        r = measure_op(spec, FAST)
        assert r["status"] == "ok", (spec["op"], spec["phase"], r.get("error"))
        assert r["runtime"]["median"] > 0 and r["runtime"]["samples"] in (3, 6)  # 6 if re-measured
        assert r["inner_loops"] >= 1 and r["peak_memory_bytes"] >= 0


def test_backward_phases_compute_only_their_gradients():
    g = model_graph("tinycnn", batch=2)
    n = {x.name: x for x in g.nodes}
    data = kernels.prepare(n["conv2:bwd_data"].spec())
    grads = data.call()
    assert len(grads) == 1 and tuple(grads[0].shape) == (2, 8, 8, 8)       # input gradient only
    weight = kernels.prepare(n["conv2:bwd_weight"].spec())
    grads = weight.call()
    assert [tuple(t.shape) for t in grads] == [(16,), (16, 8, 3, 3)]       # bias, weight (sorted)


def test_backward_matches_autograd_of_the_whole_layer():
    spec = model_graph("mlp", batch=3).nodes[0].spec()  # first linear, forward
    spec = {**spec, "phase": "bwd_weight"}
    r = kernels.prepare(spec)
    x, params, out, g = r.keep
    torch_grads = torch.autograd.grad(out, [params["bias"], params["weight"]], g, retain_graph=True)
    for a, b in zip(r.call(), torch_grads):
        assert torch.equal(a, b)
    assert torch.allclose(r.call()[1], g.t() @ x[0])                     # dW = g^T x


def test_sgd_update_changes_the_parameter_in_place():
    r = kernels.prepare({"op": "sgd", "phase": "update", "dtype": "float32", "inputs": [],
                         "params": {"param": [4, 3]}, "attrs": {"lr": 0.5}})
    param, grad, _ = r.keep
    before = param.clone()
    r.call()
    assert torch.allclose(param, before - 0.5 * grad)


def test_forward_records_autograd_like_training():
    spec = model_graph("mlp", batch=2).nodes[1].spec()  # relu after the first linear
    assert spec["grad_inputs"] == [0]
    assert kernels.prepare(spec).call().requires_grad


def test_conv_peak_memory_counts_its_output():
    spec = model_graph("tinycnn", batch=4).nodes[0].spec()
    r = measure_op(spec, FAST)
    assert r["output_bytes"] == 4 * 8 * 16 * 16 * 4
    assert r["peak_memory_bytes"] >= r["output_bytes"]


def test_unsupported_op_and_dtype_are_reported_not_raised():
    r = measure_op({"op": "fft", "phase": "fwd", "dtype": "float32", "inputs": [[4]], "params": {},
                    "attrs": {}, "signature": "s"}, FAST)
    assert r["status"] == "unsupported" and "no kernel for op 'fft'" in r["error"]
    r = measure_op({"op": "relu", "phase": "fwd", "dtype": "int8", "inputs": [[4]], "params": {},
                    "attrs": {}, "signature": "s"}, FAST)
    assert r["status"] == "unsupported"


def test_op_too_big_for_memory_is_recorded_as_not_fitting():
    huge = [1 << 20, 1 << 20, 1 << 10]  # 4 PiB of float32
    r = measure_op({"op": "relu", "phase": "fwd", "dtype": "float32", "inputs": [huge], "params": {},
                    "attrs": {}, "signature": "s"}, FAST)
    assert r["status"] == "does_not_fit"
    assert r["needed_bytes"] == 4 * (1 << 50)


def test_unstable_op_is_remeasured_and_flagged():
    spec = model_graph("mlp", batch=2).nodes[0].spec()
    r = measure_op(spec, {**FAST, "cv_threshold": 0.0})   # any jitter at all exceeds 0
    assert r["remeasured"] is True and r["unstable"] is True
    assert r["runtime"]["samples"] == 6                  # re-measured with twice the samples
    assert len(r["raw"]["values"]) == 6 and len(r["raw"]["first_values"]) == 3
    r = measure_op(spec, {**FAST, "cv_threshold": 1e9})
    assert r["remeasured"] is False and r["unstable"] is False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=10.0), min_size=1, max_size=60))
def test_summary_statistics_match_numpy(samples):
    s = summarize(samples)
    a = np.array(samples)
    assert s["median"] == pytest.approx(np.median(a), rel=1e-9)
    assert s["iqr"] == pytest.approx(np.percentile(a, 75) - np.percentile(a, 25), rel=1e-9, abs=1e-15)
    assert s["min"] == a.min() and s["max"] == a.max() and s["samples"] == len(a)
    if len(a) > 1:
        assert s["stdev"] == pytest.approx(np.std(a, ddof=1), rel=1e-6, abs=1e-15)
        assert s["cv"] == pytest.approx(np.std(a, ddof=1) / a.mean(), rel=1e-6, abs=1e-12)
    assert math.isfinite(s["cv"]) and s["cv"] >= 0


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_raw_samples_are_returned_and_give_the_statistics(cache):
    spec = model_graph("mlp", batch=2).nodes[0].spec()
    r = measure_op(spec, {**FAST, "cache": cache, "cv_threshold": 1e9, "evict_bytes": 1 << 20})
    raw = r["raw"]
    assert raw["inner_loops"] == r["inner_loops"] and "first_values" not in raw
    assert len(raw["values"]) == r["runtime"]["samples"] == 3
    assert summarize(raw["values"]) == r["runtime"]         # statistics can be recomputed


def test_settings_facts_of_this_torch():
    from devices.agent import sysinfo
    f = sysinfo.torch_facts()
    assert f["torch"] == torch.__version__ and f["threads"] == torch.get_num_threads()
    cfg = torch.__config__.show()
    if "MKL-DNN" in cfg or "oneDNN" in cfg:
        assert f["onednn"] and f["onednn"] in cfg
    if "Math Kernel Library" in cfg:
        assert f["mkl"] and f["mkl"] in cfg
    # the build strings of older torch releases (1.8 on a Jetson: oneDNN was still MKL-DNN)
    old = ("PyTorch built with:\n  - GCC 7.5\n  - Intel(R) MKL-DNN v1.7.0 (Git Hash 7aed236906b1f7a05c0917e5257a1af05e9ff683)\n"
           "  - OpenMP 201511 (a.k.a. OpenMP 4.5)\n  - NNPACK is enabled\n")
    assert sysinfo.parse_torch_config(old) == {"onednn": "1.7.0", "mkl": None, "cpu_capability": None,
                                               "blas": None}
    new = ("  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64\n"
           "  - Intel(R) oneDNN v3.5.3 (Git Hash 66f0cb9eb66affd2da3bf5f8d897376f04aae6af)\n"
           "  - CPU capability usage: AVX512\n  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release\n")
    assert sysinfo.parse_torch_config(new) == {"onednn": "3.5.3", "mkl": "2024.2",
                                               "cpu_capability": "AVX512", "blas": "open"}


def test_cold_and_warm_cache_modes():
    spec = model_graph("mlp", batch=2).nodes[0].spec()
    cold = measure_op(spec, {**FAST, "cache": "cold", "max_cold_calls": 4, "evict_bytes": 1 << 20})
    warm = measure_op(spec, {**FAST, "cache": "warm"})
    assert cold["cache"] == "cold" and 1 <= cold["inner_loops"] <= 4
    assert warm["cache"] == "warm" and warm["inner_loops"] >= 1
    assert cold["runtime"]["median"] > 0 and warm["runtime"]["median"] > 0


def test_cache_sizes_from_a_fake_sysfs_tree(tmp_path):
    from devices.agent import measure, sysinfo
    for i, (level, kind, size) in enumerate([("1", "Data", "32K"), ("1", "Instruction", "48K"),
                                             ("2", "Unified", "1024K"), ("3", "Unified", "8M")]):
        d = tmp_path / f"sys/devices/system/cpu/cpu0/cache/index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(level + "\n")
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
    assert sysinfo.cache_sizes(str(tmp_path)) == {"L1d": 32 << 10, "L1i": 48 << 10, "L2": 1 << 20, "L3": 8 << 20}
    assert measure.default_evict_bytes(str(tmp_path)) == 2 << 20
    assert measure.default_evict_bytes(str(tmp_path / "none")) == 8 << 20
