/* Nordic legacy UART (non-DMA): the nRF51 of QEMU's microbit (UART0 at 0x40002000, IRQ 2).
 * RX is interrupt-driven into the ring of src/uart_rx.c: the handler clears EVENTS_RXDRDY
 * *before* reading RXD (reading RXD re-raises the event while the 6-byte RX FIFO holds more).
 * QEMU stops delivering bytes while that FIFO is full, so a full ring loses nothing there; on
 * silicon the FIFO would overrun (ERRORSRC.OVERRUN, counted). The nRF52840 uses UARTE
 * instead (boards/nrf52840/uarte.c). */
#include "board.h"

#define UART_BASE 0x40002000u
#define TASKS_STARTRX REG32(UART_BASE + 0x000)
#define TASKS_STARTTX REG32(UART_BASE + 0x008)
#define EVENTS_RXDRDY REG32(UART_BASE + 0x108)
#define EVENTS_TXDRDY REG32(UART_BASE + 0x11C)
#define EVENTS_ERROR  REG32(UART_BASE + 0x124)
#define UART_INTENSET REG32(UART_BASE + 0x304)
#define UART_ERRORSRC REG32(UART_BASE + 0x480)
#define UART_ENABLE   REG32(UART_BASE + 0x500)
#define PSELTXD       REG32(UART_BASE + 0x50C)
#define PSELRXD       REG32(UART_BASE + 0x514)
#define UART_RXD      REG32(UART_BASE + 0x518)
#define UART_TXD      REG32(UART_BASE + 0x51C)
#define UART_BAUDRATE REG32(UART_BASE + 0x524)

/* BAUDRATE register values (nRF51 RM 29.9.11) */
#if UART_BAUD == 115200
#define BAUD_REG 0x01D7E000u
#elif UART_BAUD == 57600
#define BAUD_REG 0x00EBF000u
#elif UART_BAUD == 38400
#define BAUD_REG 0x009D5000u
#elif UART_BAUD == 19200
#define BAUD_REG 0x004EA000u
#elif UART_BAUD == 9600
#define BAUD_REG 0x00275000u
#else
#error "UART_BAUD: 9600, 19200, 38400, 57600 or 115200"
#endif

void nrf_uart_init(uint32_t tx_pin, uint32_t rx_pin)
{
    PSELTXD = tx_pin;
    PSELRXD = rx_pin;
    UART_BAUDRATE = BAUD_REG;
    UART_ENABLE = 4;
    EVENTS_TXDRDY = 0;
    EVENTS_RXDRDY = 0;
    UART_INTENSET = (1u << 2) | (1u << 9);      /* RXDRDY, ERROR */
    NVIC_ISER = 1u << UART_IRQN;
    TASKS_STARTTX = 1;
    TASKS_STARTRX = 1;
}

void board_uart_isr(void)
{
    if (EVENTS_ERROR) {
        EVENTS_ERROR = 0;
        uint32_t src = UART_ERRORSRC;
        UART_ERRORSRC = src;                   /* write 1 to clear */
        if (src & 1u) rx_ring_overrun();
    }
    while (EVENTS_RXDRDY) {
        if (rx_ring_full()) { rx_ring_stall(); return; }
        EVENTS_RXDRDY = 0;
        rx_ring_put((uint8_t)UART_RXD);
    }
}

void uart_putc(uint8_t c)
{
    EVENTS_TXDRDY = 0;
    UART_TXD = c;
    while (!EVENTS_TXDRDY) { }
}
