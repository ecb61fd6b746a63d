/* DWT CYCCNT: the core's own cycle counter (Cortex-M3/M4/M7 on real silicon). */
#include "board.h"

#define DEMCR      REG32(0xE000EDFC)
#define DWT_CTRL   REG32(0xE0001000)
#define DWT_CYCCNT REG32(0xE0001004)
#define DWT_LAR    REG32(0xE0001FB0)

void timer_init(void)
{
    DEMCR |= (1u << 24);      /* TRCENA */
    DWT_LAR = 0xC5ACCE55;     /* unlock where the lock exists */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;           /* CYCCNTENA */
}

uint32_t timer_now(void) { return DWT_CYCCNT; }
