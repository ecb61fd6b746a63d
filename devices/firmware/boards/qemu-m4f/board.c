/* QEMU `mps2-an386` (Cortex-M4 with FPU, 25 MHz): the emulated stand-in for the nRF52840.
 * The linker script limits RAM to the nRF52840's 256 KiB. CMSDK UART0 at 0x40004000. */
#include "board.h"

#define UART_DATA  REG32(0x40004000u)
#define UART_STATE REG32(0x40004004u)
#define UART_CTRL  REG32(0x40004008u)
#define UART_BAUDDIV REG32(0x40004010u)
#define CPACR REG32(0xE000ED88u)

void board_init(void)
{
    CPACR |= (0xFu << 20);              /* enable CP10/CP11 (FPU) */
    __asm volatile ("dsb\n isb");
    UART_BAUDDIV = 217;                 /* 25 MHz / 115200 */
    UART_CTRL = 3;                      /* TX and RX enable */
}

void uart_putc(uint8_t c)
{
    while (UART_STATE & 1u) { }
    UART_DATA = c;
}

uint8_t uart_getc(void)
{
    while (!(UART_STATE & 2u)) { }
    return (uint8_t)UART_DATA;
}

void board_ts_pin(int level) { (void)level; }
