// Must not compile: agents.create without its required `role`.
import createClient from "openapi-fetch";
import type { paths } from "./teamhub";

const api = createClient<paths>({ baseUrl: "/" });
await api.POST("/api/rx/agents.create", {
  body: { organizationId: "00000000-0000-0000-0000-000000000000", name: "Atlas" }, // ERROR
});
