include $(sort $(wildcard $(BR2_EXTERNAL_REWIND_PATH)/package/*/*.mk))
