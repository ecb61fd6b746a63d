"""Cortex-M boards over a serial link: the C firmware agent (devices/firmware), its framed
protocol, a pyserial transport and QEMU launchers for the emulated boards.

Entry points: ``devices.serial.transport.open_serial_agent`` and
``devices.serial.qemu.start_qemu_board``. Protocol: docs/firmware.md.
"""
