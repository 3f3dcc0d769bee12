// Must not compile: limit is a number, not a string.
import createClient from "openapi-fetch";
import type { paths } from "./teamhub";

const api = createClient<paths>({ baseUrl: "/" });
await api.POST("/api/rx/agents.getAll", {
  body: { organizationId: "00000000-0000-0000-0000-000000000000", limit: "20" }, // ERROR
});
