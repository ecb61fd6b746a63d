/* Nordic nRF52840 (Cortex-M4F, 64 MHz, 256 KiB RAM, 1 MiB flash), e.g. the nRF52840 DK:
 * UART0 on P0.06 (TX) / P0.08 (RX), routed to the J-Link virtual COM port; HFXO started for an
 * accurate baud rate; DWT CYCCNT for cycles; energy timestamp on P0.27 (TS_PIN). */
#include "board.h"

#define CLOCK_TASKS_HFCLKSTART REG32(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG32(0x40000100u)
#define GPIO_OUTSET REG32(0x50000508u)
#define GPIO_OUTCLR REG32(0x5000050Cu)
#define GPIO_DIRSET REG32(0x50000518u)
#define CPACR REG32(0xE000ED88u)
#ifndef TS_PIN
#define TS_PIN 27
#endif

void nrf_uart_init(uint32_t tx_pin, uint32_t rx_pin);

void board_init(void)
{
    CPACR |= (0xFu << 20);
    __asm volatile ("dsb\n isb");
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (!CLOCK_EVENTS_HFCLKSTARTED) { }
    GPIO_DIRSET = 1u << TS_PIN;
    GPIO_OUTSET = 1u << TS_PIN;           /* idle high; low = measured run (EnergyRunner) */
    nrf_uart_init(6, 8);
}

void board_ts_pin(int level)
{
    if (level) GPIO_OUTCLR = 1u << TS_PIN; else GPIO_OUTSET = 1u << TS_PIN;
}
