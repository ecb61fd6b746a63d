/* QEMU `microbit` (nRF51822, Cortex-M0, 16 KiB RAM): the emulated stand-in for Cortex-M0(+)
 * boards such as the MKR1000. UART0 at 0x40002000 (IRQ 2, src/uart_nrf.c); no timestamp GPIO. */
#include "board.h"

void nrf_uart_init(uint32_t tx_pin, uint32_t rx_pin);

void board_init(void) { nrf_uart_init(24, 25); /* micro:bit USB-serial pins */ }
void board_ts_pin(int level) { (void)level; }
