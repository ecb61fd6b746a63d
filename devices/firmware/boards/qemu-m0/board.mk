CPU_FLAGS := -mcpu=cortex-m0 -mthumb -mfloat-abi=soft
BOARD_SRCS := src/uart_nrf.c src/timer_systick.c
QEMU_MACHINE := microbit
DEFS := -DBOARD_CPU=\"cortex-m0\" -DBOARD_CLOCK_HZ=16000000 -DTIMER_HZ=16000000 \
        -DBOARD_RAM_BYTES=16384 -DBOARD_FLASH_BYTES=262144 \
        -DUART_IRQN=2 -DRX_RING_SIZE=256
