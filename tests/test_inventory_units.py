"""Inventory parsing and validation, catalog contents, unit parsing."""
from __future__ import annotations

import pytest

from costdb.errors import CostdbError
from costdb.units import parse_duration, parse_shape, parse_size
from devices.catalog import catalog, get_profile
from devices.inventory import load


def test_catalog_has_the_devices_with_cited_sources():
    cat = catalog()
    assert {"jetson-tx2", "rpi4b", "mkr1000", "nrf52840", "local"} <= set(cat)
    for name in ("jetson-tx2", "rpi4b", "mkr1000", "nrf52840"):
        p = cat[name]
        assert p.ram_bytes > 0 and p.storage.read_bytes_per_s > 0 and p.active_power_w > 0
        assert p.sources.get("storage") and p.sources.get("power")
    assert cat["jetson-tx2"].compute_units == ("cpu", "gpu")
    assert cat["mkr1000"].ram_bytes == 32 * 1024 and cat["mkr1000"].transport == "serial"


def test_inventory_devices(tmp_path):
    f = tmp_path / "inv.toml"
    f.write_text('[devices.jetson-tx2]\nhost = "tx2"\n\n'
                 '[devices.lab-pi]\nbased_on = "rpi4b"\nhostname = "192.0.2.10"\nuser = "pi"\nport = 2222\n'
                 '[devices.lab-pi.profile]\nram_bytes = 8589934592\n\n'
                 '[devices.nrf]\nbased_on = "nrf52840"\nserial = "socket://127.0.0.1:5000"\n')
    inv = load(f)
    assert inv.devices["jetson-tx2"].transport == "ssh"
    assert inv.devices["jetson-tx2"].profile == get_profile("jetson-tx2")
    pi = inv.devices["lab-pi"]
    assert pi.profile.ram_bytes == 8 * 1024**3 and pi.profile.based_on == "rpi4b"
    assert pi.address == "pi@192.0.2.10:2222"
    assert inv.devices["nrf"].connection == {"serial": "socket://127.0.0.1:5000", "baud": 115200}
    assert get_profile("lab-pi", inv).name == "lab-pi"


@pytest.mark.parametrize("text, message", [
    ('[devices.a]\nhost = "x"\nhost = "y"\n',
     "line 3: Cannot overwrite a value; fix the TOML syntax"),
    ('[devices.a]\nbased_on = "rpi4b"\nhostname = "h"\nspeed = 3\n',
     "line 1: device 'a': unknown key(s) speed"),
    ('\n\n[devices.b]\nbased_on = "cray"\n',
     "line 3: device 'b': based_on 'cray' is not a catalog device"),
    ('[devices.c]\nbased_on = "nrf52840"\n',
     "line 1: device 'c': a serial device needs serial = \"URL\""),
    ('[devices.d]\nbased_on = "rpi4b"\nhost = "h"\nport = "22"\n',
     "line 4: device 'd': port must be an integer 1-65535, got '22'"),
])
def test_malformed_inventory_one_line_errors(tmp_path, text, message):
    f = tmp_path / "inv.toml"
    f.write_text(text)
    with pytest.raises(CostdbError) as e:
        load(f)
    assert str(e.value).startswith(f"inventory {f} {message}")
    assert "\n" not in str(e.value)


def test_missing_explicit_inventory(tmp_path):
    with pytest.raises(CostdbError, match="does not exist"):
        load(tmp_path / "none.toml")


def test_units():
    assert parse_shape("3x32x32") == (3, 32, 32)
    assert parse_shape("784") == (784,)
    assert parse_size("256MiB") == 256 * 1024**2
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_duration("150ms") == pytest.approx(0.15)
    assert parse_duration("2s") == 2.0
    for bad in ("3x", "axb", "0x3", "-1"):
        with pytest.raises(CostdbError, match="bad shape"):
            parse_shape(bad)
    with pytest.raises(CostdbError, match="bad size"):
        parse_size("lots")
