CPU_FLAGS := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
BOARD_SRCS := src/timer_dwt.c
DEFS := -DBOARD_CPU=\"cortex-m4f\" -DBOARD_CLOCK_HZ=64000000 -DTIMER_HZ=64000000 -DTIMER_DWT=1 \
        -DBOARD_RAM_BYTES=262144 -DBOARD_FLASH_BYTES=1048576 \
        -DUART_IRQN=2 -DRX_RING_SIZE=512
# FLASH_ORIGIN=0x26000 for the Adafruit UF2 bootloader with SoftDevice S140 v6 (see README.md)
FLASH_ORIGIN ?= 0x00000000
