"""Energy sensors and board facts against fake sysfs trees, with known answers."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fake_boards import PowerScript, make_pi_tree, make_rapl_tree, make_tx2_tree, write_atomic  # noqa: E402

from devices.agent import boards, sensors, sysinfo  # noqa: E402
from devices.agent.measure import measure_idle_power, measure_op  # noqa: E402

pytestmark = pytest.mark.timeout(60)


# --- integration ------------------------------------------------------------------------------

def test_integrate_known_answers():
    # constant 5 W for 2 s
    assert sensors.integrate([(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)], 0.0, 2.0) == pytest.approx(10.0)
    # ramp 0 -> 10 W over 1 s: 5 J
    assert sensors.integrate([(0.0, 0.0), (1.0, 10.0)], 0.0, 1.0) == pytest.approx(5.0)
    # window inside the samples: edge values held flat from the nearest sample outside
    assert sensors.integrate([(-1.0, 4.0), (3.0, 4.0)], 0.0, 2.0) == pytest.approx(8.0)
    # one sample only
    assert sensors.integrate([(0.5, 3.0)], 0.0, 2.0) == pytest.approx(6.0)
    assert sensors.integrate([], 0.0, 1.0) == 0.0


@pytest.mark.parametrize("layout", ["iio", "iio_device", "hwmon"])
def test_tx2_rails_discovered_from_files(tmp_path, layout):
    make_tx2_tree(tmp_path, {"VDD_IN": 4200.0, "VDD_SYS_CPU": 900.0, "VDD_SYS_GPU": 300.0},
                  layout=layout)
    rails = {r.name: r for r in boards.ina3221_rails(str(tmp_path))}
    assert set(rails) == {"VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR", "VDD_SYS_GPU", "VDD_SYS_SOC",
                          "VDD_4V0_WIFI"}
    assert rails["VDD_IN"].monitor == "0-0041" and rails["VDD_IN"].channel in (0, 1)
    assert rails["VDD_IN"].read_mw() == pytest.approx(4200.0)
    s = sensors.find_sensor(str(tmp_path), None, {"ina3221": {"interval_s": 0.005}})
    try:
        assert s.name == "ina3221:VDD_IN"
        assert s.read_w() == pytest.approx(4.2)
        if layout == "hwmon":   # mainline driver reports its conversion cycle
            assert s.conversion_s == pytest.approx(0.010) and s.interval_s >= 0.010
        assert s.interval_s < 1.0            # faster than tegrastats' default
    finally:
        s.close()
    # other rails by name, several summed
    s = boards.Ina3221Sensor(str(tmp_path), rails=["VDD_SYS_CPU", "vdd_sys_gpu"], probe=False)
    assert s.name == "ina3221:VDD_SYS_CPU+VDD_SYS_GPU" and s.read_w() == pytest.approx(1.2)
    with pytest.raises(sensors.SensorUnavailable, match="VDD_NOPE"):
        boards.Ina3221Sensor(str(tmp_path), rail="VDD_NOPE", probe=False)


def test_constant_5w_for_a_known_window(tmp_path):
    make_tx2_tree(tmp_path, {"VDD_IN": 5000.0})
    s = boards.Ina3221Sensor(str(tmp_path), interval_s=0.005, probe=False)
    try:
        s.start()
        time.sleep(0.25)
        joules = s.stop()
        assert joules == pytest.approx(5.0 * s.last_window_s, rel=1e-9)
        assert s.last_window_s >= 0.25
        assert measure_idle_power(s, 0.1) == pytest.approx(5.0, rel=1e-9)
    finally:
        s.close()


def test_changing_power_is_integrated_over_time(tmp_path):
    files = make_tx2_tree(tmp_path, {"VDD_IN": 2000.0})
    interval = 0.005
    s = boards.Ina3221Sensor(str(tmp_path), interval_s=interval, probe=False)
    script = PowerScript(files["VDD_IN"], [(0.2, 2000.0), (0.2, 8000.0), (0.2, 3000.0), (30, 2000.0)])
    try:
        s.start()
        t0 = s._t0
        script.start()
        time.sleep(0.75)
        joules = s.stop()
        t1 = t0 + s.last_window_s
        script.stop_event.set()
        script.join()
        # the true integral from the recorded switch times (2 W before the script started)
        points = [(t0, 2000.0)] + [(t, mw) for t, mw in script.times if t < t1]
        truth = 0.0
        for (ta, pa), (tb, _) in zip(points, points[1:] + [(t1, None)]):
            truth += pa / 1000.0 * (max(tb, t0) - max(ta, t0))
        # each of the 4 steps is seen at most a few sample intervals late
        tolerance = sum(abs(b - a) / 1000.0 for (_, a), (_, b) in zip(points, points[1:])) * interval * 4
        assert joules == pytest.approx(truth, abs=tolerance + 1e-6)
        assert joules > 2.0 * s.last_window_s          # the 8 W step is in there
    finally:
        s.close()


def test_probe_finds_the_conversion_period(tmp_path):
    files = make_tx2_tree(tmp_path, {"VDD_IN": 1000.0})
    steps = [(0.02, 1000.0 + 100 * (i % 7)) for i in range(40)]
    script = PowerScript(files["VDD_IN"], steps)
    script.start()
    try:
        s = boards.Ina3221Sensor(str(tmp_path), interval_s=0.001, probe=True)
    finally:
        script.stop_event.set()
        script.join()
    # never sample faster than the values change (here every ~20 ms)
    assert s.conversion_s is not None and s.interval_s >= s.conversion_s > 0.005


def test_energy_of_a_real_op_with_the_fake_sensor(tmp_path):
    make_tx2_tree(tmp_path, {"VDD_IN": 6500.0})
    meter = sensors.find_sensor(str(tmp_path))
    spec = {"op": "linear", "phase": "fwd", "dtype": "float32", "inputs": [[4, 16]],
            "params": {"weight": [8, 16], "bias": [8]}, "attrs": {}, "grad_inputs": [],
            "signature": "test-linear"}
    try:
        res = measure_op(spec, {"samples": 3, "min_sample_time": 0.002, "warmups": 1}, "cpu", meter)
    finally:
        meter.close()
    e = res["energy"]
    assert res["status"] == "ok" and e["sensor"] == "ina3221:VDD_IN"
    assert e["gross_j"] == pytest.approx(6.5 * e["window_s"], rel=1e-9)


# --- INA219 / INA260 on I2C (hwmon), only when configured ---------------------------------------

def _ina2xx_tree(root: Path, chip: str, uw: int) -> Path:
    d = root / "sys/class/hwmon/hwmon3"
    d.mkdir(parents=True)
    (d / "name").write_text(chip + "\n")
    (d / "power1_input").write_text(f"{uw}\n")
    (d / "update_interval").write_text("2\n")
    return d


def test_ina219_only_when_configured(tmp_path):
    _ina2xx_tree(tmp_path, "ina219", 3_300_000)
    assert sensors.find_sensor(str(tmp_path)) is None           # not configured: not used
    s = sensors.find_sensor(str(tmp_path), "hwmon", {"hwmon": {"chip": "ina219", "interval_s": 0.01}})
    try:
        assert s.name == "hwmon:ina219:hwmon3" and s.read_w() == pytest.approx(3.3)
        assert s.conversion_s == pytest.approx(0.002) and s.interval_s == pytest.approx(0.01)
    finally:
        s.close()
    s = sensors.find_sensor(str(tmp_path), None, {"hwmon": {"path": "/sys/class/hwmon/hwmon3"}})
    assert s is not None and s.read_w() == pytest.approx(3.3)
    s.close()
    assert sensors.find_sensor(str(tmp_path), None, {"hwmon": {"chip": "ina260"}}) is None


# --- RAPL ---------------------------------------------------------------------------------------

def test_rapl_sums_packages_and_handles_wraparound(tmp_path):
    rng = 262143328850
    files = make_rapl_tree(tmp_path, [(rng - 1_000_000, rng), (5_000_000, rng)])
    s = sensors.find_sensor(str(tmp_path))
    assert isinstance(s, sensors.RaplCounter)
    assert s.name == "rapl:package-0+package-1"            # sub-domain intel-rapl:0:0 skipped
    s.start()
    write_atomic(files[0], "2000000\n")                      # wrapped: 1 J to the top + 2 J
    write_atomic(files[1], "9000000\n")                      # 4 J
    assert s.stop() == pytest.approx(7.0)
    assert sensors.RaplCounter.delta_uj(10, 30, 100) == 20
    assert sensors.RaplCounter.delta_uj(90, 5, 100) == 15


def test_rapl_permission_denied_means_no_sensor():
    root = Path(tempfile.mkdtemp(prefix="costdb-rapl-"))
    try:
        os.chmod(root, 0o755)
        files = make_rapl_tree(root, [(1000, 2 ** 32)])
        for p in root.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        files[0].chmod(0o400)                      # root-only, as on kernels since 5.10
        (files[0].parent / "max_energy_range_uj").chmod(0o400)
        assert isinstance(sensors.find_sensor(str(root)), sensors.RaplCounter)   # root can read
        os.seteuid(65534)                          # nobody
        try:
            assert sensors.find_sensor(str(root)) is None
        finally:
            os.seteuid(0)
    finally:
        import shutil
        shutil.rmtree(root)


def test_no_sensor_on_an_empty_tree(tmp_path):
    assert sensors.find_sensor(str(tmp_path)) is None


# --- Raspberry Pi vcgencmd ----------------------------------------------------------------------

def test_decode_throttled():
    d = boards.decode_throttled("0x50005")
    assert d["raw"] == "0x50005" and d["throttled_now"] and d["throttled_since_boot"]
    assert d["now"] == {"under_voltage": True, "arm_frequency_capped": False, "throttled": True,
                        "soft_temperature_limit": False}
    assert d["since_boot"]["under_voltage"] and d["since_boot"]["throttled"]
    clean = boards.decode_throttled("0x0")
    assert not clean["throttled_now"] and not clean["throttled_since_boot"]
    past = boards.decode_throttled("0x80000")
    assert not past["throttled_now"] and past["since_boot"]["soft_temperature_limit"]


def test_pi_facts_from_fake_tree(tmp_path):
    make_pi_tree(tmp_path, throttled="0x20002", arm_hz=600000000, temp=81.5)
    facts = sysinfo.collect(str(tmp_path))
    assert facts["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert facts["arm_clock_hz"] == 600000000 and facts["soc_temp_c"] == 81.5
    assert facts["throttled"]["now"]["arm_frequency_capped"]
    assert facts["throttled"]["since_boot"]["arm_frequency_capped"]


def test_vcgencmd_found_on_path(tmp_path, monkeypatch):
    tool = make_pi_tree(tmp_path, throttled="0x0")
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    facts = boards.board_facts("/")
    assert facts["vcgencmd"] == str(tool) and facts["throttled"]["raw"] == "0x0"


def test_no_vcgencmd_no_pi_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert boards.vcgencmd_facts(str(tmp_path)) == {}
