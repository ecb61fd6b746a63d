/* Nordic UART (legacy, non-DMA) driver: nRF51 (QEMU microbit) and nRF52840 (same registers at
 * 0x40002000). Polling. RX: clear EVENTS_RXDRDY *before* reading RXD, since reading RXD
 * re-raises the event while the FIFO holds more bytes. */
#include "board.h"

#define UART_BASE 0x40002000u
#define TASKS_STARTRX REG32(UART_BASE + 0x000)
#define TASKS_STARTTX REG32(UART_BASE + 0x008)
#define EVENTS_RXDRDY REG32(UART_BASE + 0x108)
#define EVENTS_TXDRDY REG32(UART_BASE + 0x11C)
#define UART_ENABLE   REG32(UART_BASE + 0x500)
#define PSELTXD       REG32(UART_BASE + 0x50C)
#define PSELRXD       REG32(UART_BASE + 0x514)
#define UART_RXD      REG32(UART_BASE + 0x518)
#define UART_TXD      REG32(UART_BASE + 0x51C)
#define UART_BAUDRATE REG32(UART_BASE + 0x524)

void nrf_uart_init(uint32_t tx_pin, uint32_t rx_pin)
{
    PSELTXD = tx_pin;
    PSELRXD = rx_pin;
    UART_BAUDRATE = 0x01D7E000u; /* 115200 */
    UART_ENABLE = 4;
    EVENTS_TXDRDY = 0;
    EVENTS_RXDRDY = 0;
    TASKS_STARTTX = 1;
    TASKS_STARTRX = 1;
}

void uart_putc(uint8_t c)
{
    EVENTS_TXDRDY = 0;
    UART_TXD = c;
    while (!EVENTS_TXDRDY) { }
}

uint8_t uart_getc(void)
{
    while (!EVENTS_RXDRDY) { }
    EVENTS_RXDRDY = 0;
    return (uint8_t)UART_RXD;
}
