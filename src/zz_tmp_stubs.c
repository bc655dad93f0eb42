/* TEMPORARY (not committed): stand-ins until the helper branches land. */
#include "nest/checkpoint.h"
#include "nest/surgery.h"
nest_status nest_surgery_set_area(nest_net **net, int layer, int on) {
  (void)net, (void)layer, (void)on;
  return NEST_ERR(NEST_ERR_INTERNAL, "area not yet");
}
