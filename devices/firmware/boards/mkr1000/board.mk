CPU_FLAGS := -mcpu=cortex-m0plus -mthumb -mfloat-abi=soft
BOARD_SRCS := src/timer_systick.c
DEFS := -DBOARD_CPU=\"cortex-m0plus\" -DBOARD_CLOCK_HZ=48000000 -DTIMER_HZ=48000000 \
        -DBOARD_RAM_BYTES=32768 -DBOARD_FLASH_BYTES=262144 \
        -DUART_IRQN=14 -DRX_RING_SIZE=512
