CPU_FLAGS := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
BOARD_SRCS := src/timer_systick.c
QEMU_MACHINE := mps2-an386
DEFS := -DBOARD_CPU=\"cortex-m4f\" -DBOARD_CLOCK_HZ=25000000 -DTIMER_HZ=25000000 \
        -DBOARD_RAM_BYTES=262144 -DBOARD_FLASH_BYTES=1048576 \
        -DUART_IRQN=0 -DRX_RING_SIZE=512
