/* QEMU `mps2-an386` (Cortex-M4 with FPU, 25 MHz): the emulated stand-in for the nRF52840.
 * The linker script limits RAM to the nRF52840's 256 KiB. CMSDK APB UART0 at 0x40004000, its
 * RX interrupt is IRQ 0 (UART_IRQN in board.mk). Receiving is interrupt-driven into the ring
 * of src/uart_rx.c; QEMU holds further bytes on its side while the UART's one-byte buffer is
 * full, so nothing is lost even while the emulated core is descheduled. */
#include "board.h"

#define UART_DATA      REG32(0x40004000u)
#define UART_STATE     REG32(0x40004004u)   /* 0 TXFULL, 1 RXFULL, 2 TXOVR, 3 RXOVR (w1c) */
#define UART_CTRL      REG32(0x40004008u)   /* 0 TXEN, 1 RXEN, 3 RXINTEN */
#define UART_INTSTATUS REG32(0x4000400Cu)   /* 1 RX (w1c) */
#define UART_BAUDDIV   REG32(0x40004010u)
#define CPACR REG32(0xE000ED88u)

void board_init(void)
{
    CPACR |= (0xFu << 20);              /* enable CP10/CP11 (FPU) */
    __asm volatile ("dsb\n isb");
    UART_BAUDDIV = BOARD_CLOCK_HZ / UART_BAUD;
    UART_CTRL = 1u | 2u | 8u;           /* TX, RX, RX interrupt */
    NVIC_ISER = 1u << UART_IRQN;
}

void board_uart_isr(void)
{
    UART_INTSTATUS = 2u;                /* clear first: a byte arriving later raises it again */
    if (UART_STATE & 8u) {
        UART_STATE = 8u;
        rx_ring_overrun();
    }
    while (UART_STATE & 2u) {
        if (rx_ring_full()) { rx_ring_stall(); return; }
        rx_ring_put((uint8_t)UART_DATA);
    }
}

void uart_putc(uint8_t c)
{
    while (UART_STATE & 1u) { }
    UART_DATA = c;
}

void board_ts_pin(int level) { (void)level; }
