/* Arduino MKR1000 (Microchip SAMD21G18A, Cortex-M0+, 48 MHz, 32 KiB RAM, 256 KiB flash).
 * Clock: DFLL48M open loop with the factory coarse calibration -> GCLK0 = 48 MHz (1 flash wait
 * state). UART: SERCOM5 on PB22 (TX, pad 2) / PB23 (RX, pad 3) = the MKR header pins 14 (TX)
 * and 13 (RX), "Serial1", at UART_BAUD (make BAUD=, default 115200) 8N1; connect a 3.3 V
 * USB-UART adapter. The native USB port is not used by this firmware. RX is interrupt-driven
 * (SERCOM5 = IRQ 14, RXC) into the ring of src/uart_rx.c; the SERCOM's two-byte RX buffer holds
 * bytes while the ring is full, then overflows (STATUS.BUFOVF, counted). SysTick for cycles (no DWT CYCCNT on M0+). Energy
 * timestamp on PA20 (MKR pin D6): low during a measured run. */
#include "board.h"

#define SCB_VTOR REG32(0xE000ED08u)
extern const void *const vector_table[];

#define NVMCTRL_CTRLB   REG32(0x41004004u)
#define PM_APBCMASK     REG32(0x40000420u)
#define SYSCTRL_PCLKSR  REG32(0x4000080Cu)
#define SYSCTRL_DFLLCTRL (*(volatile uint16_t *)0x40000824u)
#define SYSCTRL_DFLLVAL REG32(0x40000828u)
#define GCLK_STATUS     (*(volatile uint8_t *)0x40000C01u)
#define GCLK_CLKCTRL    (*(volatile uint16_t *)0x40000C02u)
#define GCLK_GENCTRL    REG32(0x40000C04u)
#define PORT_DIRSET(g)  REG32(0x41004408u + 0x80u * (g))
#define PORT_OUTCLR(g)  REG32(0x41004414u + 0x80u * (g))
#define PORT_OUTSET(g)  REG32(0x41004418u + 0x80u * (g))
#define PORT_PMUX(g, n) (*(volatile uint8_t *)(0x41004430u + 0x80u * (g) + (n)))
#define PORT_PINCFG(g, n) (*(volatile uint8_t *)(0x41004440u + 0x80u * (g) + (n)))
#define SERCOM5         0x42001C00u
#define USART_CTRLA     REG32(SERCOM5 + 0x00)
#define USART_CTRLB     REG32(SERCOM5 + 0x04)
#define USART_BAUD      (*(volatile uint16_t *)(SERCOM5 + 0x0C))
#define USART_INTENSET  (*(volatile uint8_t *)(SERCOM5 + 0x16))
#define USART_INTFLAG   (*(volatile uint8_t *)(SERCOM5 + 0x18))
#define USART_STATUS    (*(volatile uint16_t *)(SERCOM5 + 0x1A))
#define USART_SYNCBUSY  REG32(SERCOM5 + 0x1C)
#define USART_DATA      (*(volatile uint16_t *)(SERCOM5 + 0x28))
#define TS_PIN 20u /* PA20 */

static void clock_init(void)
{
    NVMCTRL_CTRLB = (NVMCTRL_CTRLB & ~(0xFu << 1)) | (1u << 1);    /* RWS = 1 */
    SYSCTRL_DFLLCTRL = 0x0002;                                       /* enable, open loop */
    while (!(SYSCTRL_PCLKSR & (1u << 4))) { }                        /* DFLLRDY */
    uint32_t coarse = (*(volatile uint32_t *)0x00806024u >> 26) & 0x3Fu; /* NVM cal row */
    if (coarse == 0x3F) coarse = 0x1F;
    SYSCTRL_DFLLVAL = (coarse << 10) | 512u;
    while (!(SYSCTRL_PCLKSR & (1u << 4))) { }
    GCLK_GENCTRL = 0u | (0x07u << 8) | (1u << 16);                   /* GCLK0 <- DFLL48M */
    while (GCLK_STATUS & 0x80u) { }
}

void board_init(void)
{
    SCB_VTOR = (uint32_t)vector_table;   /* linked behind a bootloader: our vectors */
    clock_init();
    PM_APBCMASK |= (1u << 7);                                        /* SERCOM5 */
    GCLK_CLKCTRL = (uint16_t)(0x19u | (0u << 8) | (1u << 14));       /* SERCOM5_CORE <- GCLK0 */
    while (GCLK_STATUS & 0x80u) { }
    /* PB22 / PB23 to peripheral function D (SERCOM-ALT) */
    PORT_PMUX(1, 11) = 0x33;
    PORT_PINCFG(1, 22) = 1;
    PORT_PINCFG(1, 23) = 1;
    USART_CTRLA = 1;                                                 /* SWRST */
    while (USART_SYNCBUSY & 1u) { }
    /* internal clock, async, LSB first, TXPO = 1 (pad 2), RXPO = 3 (pad 3) */
    USART_CTRLA = (1u << 2) | (1u << 30) | (1u << 16) | (3u << 20);
    USART_BAUD = (uint16_t)(65536.0 * (1.0 - 16.0 * (double)UART_BAUD / 48000000.0));
    USART_CTRLB = (1u << 16) | (1u << 17);                          /* TXEN, RXEN */
    while (USART_SYNCBUSY & 4u) { }
    USART_CTRLA |= 2u;                                               /* ENABLE */
    while (USART_SYNCBUSY & 2u) { }
    USART_INTENSET = 4u;                                             /* RXC */
    NVIC_ISER = 1u << UART_IRQN;
    PORT_DIRSET(0) = 1u << TS_PIN;
    PORT_OUTSET(0) = 1u << TS_PIN;
}

void uart_putc(uint8_t c)
{
    while (!(USART_INTFLAG & 1u)) { }  /* DRE */
    USART_DATA = c;
}

void board_uart_isr(void)
{
    if (USART_STATUS & 4u) {           /* BUFOVF: the RX buffer overflowed (write 1 to clear) */
        USART_STATUS = 4u;
        rx_ring_overrun();
    }
    while (USART_INTFLAG & 4u) {       /* RXC, cleared by reading DATA */
        if (rx_ring_full()) { rx_ring_stall(); return; }
        rx_ring_put((uint8_t)USART_DATA);
    }
}

void board_ts_pin(int level)
{
    if (level) PORT_OUTCLR(0) = 1u << TS_PIN; else PORT_OUTSET(0) = 1u << TS_PIN;
}
